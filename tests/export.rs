//! Native export into BanyanDB, end to end: the real iomond (real probes,
//! real history store) writing to a gRPC stand-in for BanyanDB made from
//! iomon's own definitions (`common/banyandb_server.rs`), which records
//! what it was sent. What the stand-in stored is compared, value for
//! value, with the Samples of iomond's own history.

#[path = "common/banyandb_server.rs"]
mod banyandb_server;
mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banyandb_server::{certificates, Server};
use common::daemon::*;
use common::*;
use iomon::export::config::BanyanDbExport;
use iomon::export::schema;
use iomon::sample::Sample;

const HOST: &str = "test-node";

/// iomond's config: the history flushed every second, this process a
/// target (its own fadvise calls are exact), the exporter on `endpoint`
/// with short timeouts and retries, plus `extra` keys of
/// `[export.banyandb]`.
fn config(endpoint: &str, extra: &str) -> String {
    format!(
        "[store]\nflush_interval = \"1s\"\n\n[targets.me]\npid = {}\n\n[export.banyandb]\nendpoint = \"{endpoint}\"\nhost = \"{HOST}\"\ntimeout = \"2s\"\nretry_max = \"2s\"\nbatch = 20\nsend_interval = \"0s\"\n{extra}\n",
        std::process::id()
    )
}

fn export_cfg(text: &str) -> BanyanDbExport {
    iomon::config::Config::parse(text, Path::new("test.toml"))
        .unwrap()
        .export
        .banyandb
        .unwrap()
}

fn export_status(d: &Daemon) -> serde_json::Value {
    d.json(&["status"])["export"].clone()
}

/// Waits until the exporter has written everything up to the newest
/// Sample (within two ticks), and a few Samples more than `after` ms.
fn wait_caught_up(d: &Daemon, after_ms: u64, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let e = export_status(d);
        let written = e["newest_written_ms"].as_u64().unwrap_or(0);
        let stored = e["newest_stored_ms"].as_u64().unwrap_or(u64::MAX);
        if e["state"] == "connected" && written > after_ms && stored.saturating_sub(written) <= 500
        {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "the exporter did not catch up in {within:?}: {e}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, keeping the state directory.
fn stop(d: Daemon) -> PathBuf {
    let dir = d.dir.clone();
    let (st, err) = d.stop_keep();
    assert!(st.success(), "iomond exited with {st}:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    dir
}

/// Every raw Sample of a stopped iomond's history.
fn history(dir: &Path) -> Vec<Sample> {
    let copy = iomon::store::StoreCopy::open(&dir.join("history")).unwrap();
    copy.store.raw_after(None, usize::MAX).unwrap()
}

/// The exporter's cursor: (start, end) of the last Sample acknowledged.
fn cursor(dir: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(dir.join("export-banyandb.cursor")).unwrap();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    (it.next().unwrap(), it.next().unwrap())
}

/// Checks that every data point of every Sample up to the cursor is
/// stored with exactly the values the Sample holds; returns how many.
fn assert_history_arrived(
    server: &Server,
    cfg: &BanyanDbExport,
    samples: &[Sample],
    upto: u64,
) -> usize {
    let measures = schema::measures(cfg);
    let st = server.state();
    let mut n = 0;
    let mut missing = Vec::new();
    for s in samples.iter().filter(|s| s.start_ms <= upto) {
        for p in schema::points(s, &measures, cfg) {
            let key = (
                measures[p.measure].name.clone(),
                HOST.to_string(),
                p.scope.clone(),
                p.ts_ms as i64,
                1,
            );
            match st.points.get(&key) {
                Some(got) => {
                    assert_eq!(got.fields, p.values, "{key:?}");
                    n += 1;
                }
                None => missing.push(key),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} data points of the history never arrived, first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    n
}

fn posix_fadvise_n(f: &File, advice: i32, n: usize) {
    for _ in 0..n {
        assert_eq!(fadvise(f.as_raw_fd(), 0, 0, advice), 0);
    }
}

/// Sum of one field of this process's target points of a measure.
fn target_sum(server: &Server, measure: &str, field: &str) -> i64 {
    let st = server.state();
    let idx = st
        .fields(measure)
        .iter()
        .position(|f| f == field)
        .unwrap_or_else(|| panic!("{measure} has no field {field}"));
    st.points
        .iter()
        .filter(|(k, _)| k.0 == measure && k.2 == "target:me")
        .map(|(_, v)| v.fields[idx].unwrap_or(0))
        .sum()
}

#[test]
fn bpf_export_writes_every_sample_exactly_and_reuses_the_schema_after_restarts() {
    let Some(_k) =
        bpf_or_skip("bpf_export_writes_every_sample_exactly_and_reuses_the_schema_after_restarts")
    else {
        return;
    };
    let mut server = Server::start(None);
    let text = config(&server.endpoint(), "");
    let cfg = export_cfg(&text);
    let d = Daemon::start("export-exact", &[], Some(&text));
    let first = wait_caught_up(&d, 0, Duration::from_secs(30));
    assert_eq!(first["group"], "iomon");
    {
        let st = server.state();
        let g = st.group.as_ref().unwrap();
        assert_eq!(
            g.catalog,
            iomon::export::pb::common::Catalog::Measure as i32
        );
        let opts = g.resource_opts.as_ref().unwrap();
        assert_eq!(
            (
                opts.shard_num,
                opts.ttl.unwrap().num,
                opts.segment_interval.unwrap().num
            ),
            (1, 7, 1)
        );
        assert_eq!(st.groups_created, 1);
        let names: Vec<_> = schema::measures(&cfg).into_iter().map(|m| m.name).collect();
        assert_eq!(
            st.measures.keys().cloned().collect::<Vec<_>>().len(),
            names.len()
        );
        for m in schema::measures(&cfg) {
            assert_eq!(st.fields(&m.name), m.fields, "measure {}", m.name);
        }
        assert_eq!(st.measures_created as usize, names.len());
    }
    // Our own fadvise calls, counted exactly in our target's points.
    let dir = disk_dir("export-file");
    let path = dir.join("f");
    make_file(&path, 1 << 20);
    let f = File::open(&path).unwrap();
    posix_fadvise_n(&f, libc::POSIX_FADV_DONTNEED, 7);
    posix_fadvise_n(&f, libc::POSIX_FADV_WILLNEED, 3);
    let t = iomon::now_ms();
    std::thread::sleep(Duration::from_millis(600));
    wait_caught_up(&d, t, Duration::from_secs(30));
    // iomond restarted: the schema is found, not made again; the cursor
    // goes on.
    let state = stop(d);
    let (_, end1) = cursor(&state);
    let d = Daemon::start("export-exact", &[], Some(&text));
    wait_caught_up(&d, end1 + 1000, Duration::from_secs(30));
    // BanyanDB restarted: the same.
    server.restart();
    let t = iomon::now_ms();
    std::thread::sleep(Duration::from_millis(500));
    wait_caught_up(&d, t, Duration::from_secs(30));
    let state = stop(d);
    {
        let st = server.state();
        assert_eq!(st.groups_created, 1);
        assert_eq!(st.measures_created as usize, schema::measures(&cfg).len());
        assert_eq!(st.measure_updates, 0);
        // Message ids increase within each stream and across them, per
        // connection (they restart with iomond).
        for s in &st.streams {
            assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
            assert!(s.iter().all(|id| *id > 0));
        }
        // Timestamps are the Samples' starts: whole milliseconds.
        assert!(
            !st.answered.contains_key("STATUS_INVALID_TIMESTAMP"),
            "{:?}",
            st.answered
        );
        assert_eq!(st.overwrites, 0, "a batch was sent twice without an outage");
    }
    let samples = history(&state);
    let (upto, _) = cursor(&state);
    let n = assert_history_arrived(&server, &cfg, &samples, upto);
    assert!(
        n > samples.len(),
        "{n} points for {} Samples",
        samples.len()
    );
    // The exact numbers of our own calls, as iomond's history has them.
    assert_eq!(target_sum(&server, "fadvise", "calls_dontneed_ok"), 7);
    assert_eq!(target_sum(&server, "fadvise", "calls_willneed_ok"), 3);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn bpf_export_sends_what_an_outage_and_a_sigkill_held_back_once() {
    let Some(_k) = bpf_or_skip("bpf_export_sends_what_an_outage_and_a_sigkill_held_back_once")
    else {
        return;
    };
    let mut server = Server::start(None);
    let text = config(&server.endpoint(), "max_points_per_second = 400");
    let cfg = export_cfg(&text);
    let d = Daemon::start("export-outage", &[], Some(&text));
    wait_caught_up(&d, 0, Duration::from_secs(30));
    let dir = disk_dir("export-outage-file");
    let path = dir.join("f");
    make_file(&path, 1 << 20);
    let f = File::open(&path).unwrap();
    // BanyanDB gone for 30 s while the workload runs.
    server.stop();
    let outage = Instant::now();
    let mut calls = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        posix_fadvise_n(&f, libc::POSIX_FADV_DONTNEED, 1);
        calls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let e = export_status(&d);
    assert_eq!(e["state"], "retrying", "{e}");
    assert!(
        e["last_error"]
            .as_str()
            .unwrap()
            .contains(&server.endpoint()),
        "{e}"
    );
    server.restart();
    // Catching up at 400 points a second: killed mid-way.
    std::thread::sleep(Duration::from_secs(4));
    let before = server.state().points.len();
    let mut d = d;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGKILL) };
    d.child.wait().unwrap();
    let state = std::mem::take(&mut d.dir);
    drop(d);
    assert!(before > 0, "nothing arrived before the kill");
    let d = start_answering("export-outage", &text);
    assert_eq!(d.dir, state);
    wait_caught_up(&d, iomon::now_ms(), Duration::from_secs(90));
    let e = export_status(&d);
    assert_eq!(e["points_refused"], 0, "{e}");
    let state = stop(d);
    let samples = history(&state);
    let (upto, _) = cursor(&state);
    // Every interval of the outage and of the kill is there, stored once
    // per entity and time (a batch whose acknowledgement the kill cut
    // short is sent again: an overwrite, never a second point).
    let n = assert_history_arrived(&server, &cfg, &samples, upto);
    // What is sent again is bounded: the cursor is synced at most every
    // 5 s, so the kill resends at most 5 s of catching up (400 points a
    // second), plus the batch in flight at the kill and at the stop.
    let measures = schema::measures(&cfg);
    let per_sample = samples
        .iter()
        .map(|s| schema::points(s, &measures, &cfg).len() as u64)
        .max()
        .unwrap_or(0);
    let bound = 5 * 400 + 2 * cfg.batch as u64 * per_sample;
    let st = server.state();
    assert!(
        st.overwrites <= bound,
        "{} overwrites, more than {bound}",
        st.overwrites
    );
    drop(st);
    assert!(n > 0);
    assert_eq!(target_sum(&server, "fadvise", "calls_dontneed_ok"), calls);
    let _ = std::fs::remove_dir_all(&state);
}

/// A sample's value in Prometheus text (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

/// (status latencies, scrape latencies) of `n` requests each.
fn latencies(d: &Daemon, addr: &str, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let mut st = Vec::new();
    let mut sc = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        d.ctl_ok(&["status"]);
        st.push(t.elapsed());
        let t = Instant::now();
        let (code, _, _) = http_get(addr, "/metrics", &[]);
        sc.push(t.elapsed());
        assert_eq!(code, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    (st, sc)
}

#[test]
fn bpf_export_to_a_server_that_never_answers_delays_nothing() {
    let Some(_k) = bpf_or_skip("bpf_export_to_a_server_that_never_answers_delays_nothing") else {
        return;
    };
    let server = Server::start(None);
    let addr = format!("127.0.0.1:{}", free_port());
    let text = config(&server.endpoint(), "");
    let d = Daemon::start("export-hung", &["--metrics-listen", &addr], Some(&text));
    wait_caught_up(&d, 0, Duration::from_secs(30));
    // Usual latency, this test's own window: exporter working.
    let (st0, sc0) = latencies(&d, &addr, 30);
    let labels = format!("{{endpoint=\"{}\",group=\"iomon\"}}", server.endpoint());
    let (_, _, m) = http_get(&addr, "/metrics", &[]);
    assert!(m.contains(&format!("iomon_export_up{labels} 1")), "{m}");
    let written = metric(&m, &format!("iomon_export_points_written_total{labels}"));
    assert!(written > 0.0, "{m}");
    let ticks0 = d.json(&["status"])["ticks"].as_u64().unwrap();
    server.state().hang = true;
    let t = Instant::now();
    let (st1, sc1) = latencies(&d, &addr, 60);
    let status = d.json(&["status"]);
    let secs = t.elapsed().as_secs_f64();
    // Every call to the hung server timed out (2 s) while this ran.
    let e = &status["export"];
    assert_eq!(e["state"], "retrying", "{e}");
    assert!(
        e["last_error"].as_str().unwrap().contains("did not answer"),
        "{e}"
    );
    let (_, _, m) = http_get(&addr, "/metrics", &[]);
    assert!(m.contains(&format!("iomon_export_up{labels} 0")), "{m}");
    assert!(
        metric(
            &m,
            &format!("iomon_export_last_error_timestamp_seconds{labels}")
        ) > 0.0
    );
    // Ticks kept their pace (250 ms), none late.
    let ticks = status["ticks"].as_u64().unwrap() - ticks0;
    assert!(
        ticks as f64 >= secs / 0.25 - 3.0,
        "{ticks} ticks in {secs:.1}s"
    );
    assert!(
        !status["warnings"].to_string().contains("ran late"),
        "{}",
        status["warnings"]
    );
    let show = |v: &[Duration]| {
        format!(
            "p50 {:?} max {:?}",
            percentile(v.to_vec(), 0.5),
            percentile(v.to_vec(), 1.0)
        )
    };
    eprintln!(
        "status: working {} hung {}; /metrics: working {} hung {}",
        show(&st0),
        show(&st1),
        show(&sc0),
        show(&sc1)
    );
    // The same latency as before, within this machine's noise: medians
    // within 20 ms, no request past 500 ms (a hung call is 2 s).
    for (a, b) in [(&st0, &st1), (&sc0, &sc1)] {
        assert!(
            percentile(b.to_vec(), 0.5) <= percentile(a.to_vec(), 0.5) + Duration::from_millis(20),
            "{} then {}",
            show(a),
            show(b)
        );
        assert!(
            percentile(b.to_vec(), 1.0) < Duration::from_millis(500),
            "{}",
            show(b)
        );
    }
    let _ = std::fs::remove_dir_all(stop(d));
}

#[test]
fn bpf_export_rereads_an_expired_schema_and_appends_fields_to_an_older_measure() {
    let Some(_k) =
        bpf_or_skip("bpf_export_rereads_an_expired_schema_and_appends_fields_to_an_older_measure")
    else {
        return;
    };
    let server = Server::start(None);
    let text = config(&server.endpoint(), "");
    let cfg = export_cfg(&text);
    let measures = schema::measures(&cfg);
    let reads = measures.iter().find(|m| m.name == "reads").unwrap();
    // An older iomon made `reads` with its first three fields.
    {
        let mut st = server.state();
        st.group = Some(Default::default());
        st.next_rev = 10;
        let m = iomon::export::pb::database::Measure {
            metadata: Some(iomon::export::pb::common::Metadata {
                group: "iomon".into(),
                name: "reads".into(),
                ..Default::default()
            }),
            fields: reads.fields[..3]
                .iter()
                .map(|f| iomon::export::pb::database::FieldSpec {
                    name: f.clone(),
                    field_type: 2,
                    encoding_method: 1,
                    compression_method: 1,
                })
                .collect(),
            ..Default::default()
        };
        st.measures.insert("reads".into(), (m, 5));
    }
    let d = Daemon::start("export-schema", &[], Some(&text));
    wait_caught_up(&d, 0, Duration::from_secs(30));
    assert_eq!(server.state().fields("reads"), reads.fields);
    assert_eq!(server.state().measure_updates, 1);
    // The operator changes the schema: the next write is expired.
    server.state().bump("fadvise");
    let t = iomon::now_ms();
    std::thread::sleep(Duration::from_millis(600));
    let e = wait_caught_up(&d, t, Duration::from_secs(30));
    assert!(e["schema_rereads"].as_u64().unwrap() >= 1, "{e}");
    assert!(server.state().answered["STATUS_EXPIRED_SCHEMA"] >= 1);
    let state = stop(d);
    let samples = history(&state);
    let (upto, _) = cursor(&state);
    assert_history_arrived(&server, &cfg, &samples, upto);
    let _ = std::fs::remove_dir_all(&state);
}

fn wait_error(d: &Daemon, needle: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = d.json(&["status"]);
        if s["export"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(needle))
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no error {needle:?}: {}",
            s["export"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bpf_export_auth_and_tls_failures_are_named_and_the_daemon_runs_on() {
    let Some(_k) = bpf_or_skip("bpf_export_auth_and_tls_failures_are_named_and_the_daemon_runs_on")
    else {
        return;
    };
    let certs = disk_dir("export-tls");
    let (ca, id) = certificates(&certs, "good");
    let (other_ca, _) = certificates(&certs, "other");
    let server = Server::start(Some(id));
    server.state().auth = Some(("iomon".into(), "right".into()));
    let pw = certs.join("pw");
    std::fs::write(&pw, "wrong\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let endpoint = format!("localhost:{}", server.addr.port());
    let keys = |ca: &Path| {
        format!(
            "tls_ca_file = \"{}\"\nusername = \"iomon\"\npassword_file = \"{}\"",
            ca.display(),
            pw.display()
        )
    };
    // A CA that did not sign the server's certificate.
    let d = Daemon::start(
        "export-badca",
        &[],
        Some(&config(&endpoint, &keys(&other_ca))),
    );
    let s = wait_error(&d, "TLS with BanyanDB at");
    assert!(s["export"]["last_error"]
        .as_str()
        .unwrap()
        .contains(&endpoint));
    assert!(
        s["warnings"].to_string().contains("BanyanDB export"),
        "{}",
        s["warnings"]
    );
    d.wait_ticks(4);
    let _ = std::fs::remove_dir_all(stop(d));
    // The right CA, the wrong password.
    let d = Daemon::start("export-badpw", &[], Some(&config(&endpoint, &keys(&ca))));
    let s = wait_error(&d, "refused user \"iomon\"");
    assert!(s["export"]["last_error"]
        .as_str()
        .unwrap()
        .contains(&endpoint));
    assert!(server.state().calls_unauthenticated > 0);
    d.wait_ticks(4);
    let metrics = d.ctl_ok(&["status"]);
    assert!(metrics.contains("export last error"), "{metrics}");
    let _ = std::fs::remove_dir_all(stop(d));
    // Both right: written.
    std::fs::write(&pw, "right\n").unwrap();
    let d = Daemon::start("export-tls-ok", &[], Some(&config(&endpoint, &keys(&ca))));
    wait_caught_up(&d, 0, Duration::from_secs(30));
    assert!(!server.state().points.is_empty());
    let _ = std::fs::remove_dir_all(stop(d));
}

#[test]
fn export_config_is_checked_key_by_key() {
    let bad = [
        ("ttl = \"90m\"", "export.banyandb.ttl"),
        ("families = [\"nope\"]", "export.banyandb.families"),
        ("username = \"u\"", "export.banyandb.password_file"),
        ("endpoint2 = 1", "endpoint2"),
    ];
    let dir = disk_dir("export-config");
    for (line, needle) in bad {
        let text = format!("[export.banyandb]\nendpoint = \"db:17912\"\n{line}\n");
        let p = dir.join("c.toml");
        std::fs::write(&p, &text).unwrap();
        let out = std::process::Command::new(IOMOND)
            .arg("--check-config")
            .arg("--config")
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line}: accepted");
        assert!(err.contains(needle), "{line}: {err}");
    }
}

#[test]
fn bpf_export_counts_what_retention_dropped_before_it_was_sent() {
    let Some(_k) = bpf_or_skip("bpf_export_counts_what_retention_dropped_before_it_was_sent")
    else {
        return;
    };
    let server = Server::start(None);
    let text = config(&server.endpoint(), "");
    // A cursor far behind a history that no longer holds anything after
    // it: as if retention had dropped the Samples of a long outage.
    let dir = disk_dir("e2e-export-skip").keep();
    std::fs::write(dir.join("export-banyandb.cursor"), "1000 2000 iomon\n").unwrap();
    let d = Daemon::start("export-skip", &[], Some(&text));
    assert_eq!(d.dir, dir);
    let e = wait_caught_up(&d, 0, Duration::from_secs(30));
    let skipped = e["skipped_ms"].as_u64().unwrap();
    let first = server.state().points.keys().map(|k| k.3).min().unwrap() as u64;
    assert_eq!(skipped, first - 2000, "{e}");
    let (st, err) = d.stop_keep();
    assert!(st.success());
    assert_eq!(err.matches("retention dropped them").count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bpf_export_points_refused_for_good_are_counted_logged_once_and_passed() {
    let Some(_k) =
        bpf_or_skip("bpf_export_points_refused_for_good_are_counted_logged_once_and_passed")
    else {
        return;
    };
    let server = Server::start(None);
    server.state().refuse = Some("STATUS_INVALID_TIMESTAMP");
    let text = config(&server.endpoint(), "");
    let d = Daemon::start("export-refused", &[], Some(&text));
    // Refused points are iomon's bug, not the server's outage: the
    // exporter goes on past them (the cursor moves), counting them.
    let e = wait_caught_up(&d, iomon::now_ms() + 1500, Duration::from_secs(30));
    assert!(e["points_refused"].as_u64().unwrap() > 0, "{e}");
    assert_eq!(e["points_written"], 0, "{e}");
    assert!(server.state().points.is_empty());
    let dir = d.dir.clone();
    let (st, err) = d.stop_keep();
    assert!(st.success());
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("STATUS_INVALID_TIMESTAMP"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("a bug in iomon"), "{}", lines[0]);
    let _ = std::fs::remove_dir_all(dir);
}
