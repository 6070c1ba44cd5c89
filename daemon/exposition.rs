//! Prometheus text (0.0.4) and OpenMetrics 1.0 rendering of the in-memory
//! totals. Pure: a function of its inputs, rendered once per tick and served
//! as often as asked.
//!
//! Base units, `_total` counters, `# HELP`/`# TYPE` on every family, label
//! values escaped, labels of bounded cardinality only (no pid label: per
//! process numbers go by `comm`, capped, with an `other` series).

use crate::abi;
use crate::family;
use crate::probes::{FamilyState, FamilyStatus};
use crate::promtext::{Kind, Out};
use crate::store::StoreStatus;
use crate::totals::Totals;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Picks the format from an Accept header: OpenMetrics when it is
    /// asked for with a q-value at least that of text/plain.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let mut om_q: Option<f32> = None;
        let mut text_q: Option<f32> = None;
        for part in accept.split(',') {
            let mut fields = part.split(';').map(str::trim);
            let media = fields.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            let mut version_ok = true;
            for f in fields {
                if let Some(v) = f.strip_prefix("q=") {
                    q = v.parse().unwrap_or(0.0);
                } else if let Some(v) = f.strip_prefix("version=") {
                    version_ok = v.starts_with("1.0");
                }
            }
            match media.as_str() {
                "application/openmetrics-text" if version_ok => {
                    om_q = Some(om_q.map_or(q, |o: f32| o.max(q)))
                }
                "text/plain" | "*/*" => text_q = Some(text_q.map_or(q, |o: f32| o.max(q))),
                _ => {}
            }
        }
        match (om_q, text_q) {
            (Some(o), Some(t)) if o > 0.0 && o >= t => Format::OpenMetrics,
            (Some(o), None) if o > 0.0 => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }
}

/// Gauges about the BPF maps: (name, entries, capacity).
pub type MapGauge = (String, u64, u64);

/// Process self-metrics, read from /proc/self.
#[derive(Debug, Clone, Default)]
pub struct SelfStats {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub open_fds: u64,
    pub start_time_seconds: f64,
}

impl SelfStats {
    /// `open_fds`: as counted elsewhere (off the event loop); `None`:
    /// counted here.
    pub fn read(open_fds: Option<u64>) -> SelfStats {
        let mut s = SelfStats::default();
        // SAFETY: sysconf has no memory-safety preconditions.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command (which may contain spaces).
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                s.cpu_seconds = (num(11) + num(12)) / tick;
                s.rss_bytes = num(21) as u64 * page;
                // The boot time from /proc/stat (one line of a file that
                // grows with the CPUs and interrupts): read once, it does
                // not change.
                static BOOT: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
                let boot = BOOT.get().copied().or_else(|| {
                    let t = std::fs::read_to_string("/proc/stat").ok()?;
                    let b = t.lines().find_map(|l| {
                        l.strip_prefix("btime ")
                            .and_then(|v| v.trim().parse::<f64>().ok())
                    })?;
                    Some(*BOOT.get_or_init(|| b))
                });
                s.start_time_seconds = boot.unwrap_or(0.0) + num(19) / tick;
            }
        }
        s.open_fds = open_fds
            .or_else(crate::drain::upkeep::open_fds)
            .unwrap_or(0);
        s
    }
}

/// `iomon_export_*`: the BanyanDB exporter's state and progress.
fn write_export(e: &crate::export::ExportStatus, o: &mut Out) {
    let ep = [
        ("endpoint", e.endpoint.as_str()),
        ("group", e.group.as_str()),
    ];
    o.family(
        "iomon_export_up",
        Kind::Gauge,
        "1 while the BanyanDB exporter is connected and writing, 0 while it retries.",
    );
    o.gauge(
        "iomon_export_up",
        &ep,
        f64::from(u8::from(e.state == "connected")),
    );
    o.family(
        "iomon_export_newest_written_timestamp_seconds",
        Kind::Gauge,
        "End of the newest Sample BanyanDB acknowledged (seconds since the epoch; absent before the first).",
    );
    if let Some(t) = e.newest_written_ms {
        o.gauge(
            "iomon_export_newest_written_timestamp_seconds",
            &ep,
            t as f64 / 1000.0,
        );
    }
    o.family(
        "iomon_export_behind_seconds",
        Kind::Gauge,
        "How far the export is behind the history: the newest Sample stored less the newest acknowledged.",
    );
    if let Some(b) = e.behind_ms() {
        o.gauge("iomon_export_behind_seconds", &ep, b as f64 / 1000.0);
    }
    for (name, help, v) in [
        (
            "iomon_export_points_written",
            "Data points BanyanDB acknowledged.",
            e.points_written,
        ),
        (
            "iomon_export_points_refused",
            "Data points BanyanDB refused for good (a bug: see the log).",
            e.points_refused,
        ),
        (
            "iomon_export_samples_written",
            "Samples whose data points BanyanDB acknowledged.",
            e.samples_written,
        ),
        (
            "iomon_export_connects",
            "Connections the exporter opened (reconnects after errors included).",
            e.connects,
        ),
        (
            "iomon_export_schema_rereads",
            "Measure revisions re-read after BanyanDB answered STATUS_EXPIRED_SCHEMA.",
            e.schema_rereads,
        ),
        (
            "iomon_export_skipped_seconds",
            "History retention dropped before the exporter sent it (seconds of Samples).",
            e.skipped_ms / 1000,
        ),
    ] {
        o.family(name, Kind::Counter, help);
        o.counter(name, &ep, v);
    }
    o.family(
        "iomon_export_last_error_timestamp_seconds",
        Kind::Gauge,
        "When the exporter last failed (seconds since the epoch; the error is in iomonctl status and the log).",
    );
    if let Some(t) = e.last_error_ms {
        o.gauge(
            "iomon_export_last_error_timestamp_seconds",
            &ep,
            t as f64 / 1000.0,
        );
    }
}

/// A histogram's buckets: (upper bound, `None` for +Inf; count, not
/// cumulative).
pub type Buckets<'a> = &'a [(Option<f64>, u64)];

pub struct Inputs<'a> {
    pub totals: &'a Totals,
    pub probes: &'a [FamilyStatus],
    pub store: Option<&'a StoreStatus>,
    pub export: Option<&'a crate::export::ExportStatus>,
    pub drain_seconds: f64,
    pub drain_lag_seconds: f64,
    /// The event loop's turn times (buckets, sum); `None` outside a daemon.
    pub loop_turns: Option<(Buckets<'a>, f64)>,
    pub page_size_bytes: u64,
    pub maps: &'a [MapGauge],
    pub self_stats: &'a SelfStats,
}

pub fn render(inp: &Inputs, format: Format) -> String {
    let t = inp.totals;
    let mut o = Out::new(format == Format::OpenMetrics, t.started_ms as f64 / 1000.0);

    o.family(
        "iomon_build_info",
        Kind::Gauge,
        "iomon build: version of the running iomond.",
    );
    o.gauge(
        "iomon_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    o.family(
        "iomon_page_size_bytes",
        Kind::Gauge,
        "The kernel's page size: every iomon metric in pages counts pages of this size.",
    );
    o.gauge("iomon_page_size_bytes", &[], inp.page_size_bytes as f64);

    probe_metrics(inp.probes, &mut o);

    let s = &t.sum;
    // Families absent from the sum were never attached: their metrics are
    // left out (unavailable), never exported as zero.
    for f in family::ALL {
        if let Some(sec) = s.section(f.name()) {
            family::write_out(&family::metrics_of(f, sec, family::Scope::Host), &mut o);
        }
    }
    if let Some(core) = s.section("core") {
        family::write_out(
            &family::section_metrics(&abi::CORE, core, family::Scope::Host),
            &mut o,
        );
    }
    // The same for each target, under iomon_target_* with a target label.
    for f in family::ALL {
        let per_target: Vec<(&str, Vec<family::MetricOut>)> = s
            .targets
            .iter()
            .filter_map(|(name, secs)| {
                secs.get(f.name()).map(|sec| {
                    (
                        name.as_str(),
                        family::metrics_of(f, sec, family::Scope::Target),
                    )
                })
            })
            .collect();
        family::write_out(&family::target_metrics(&per_target), &mut o);
    }

    // Families' rows (the block family's per device): the host's numbers
    // per key, under iomon_<label>_*; declared counters and histograms only.
    for f in family::ALL {
        let (Some(rows), Some(keyed)) = (&f.schema.rows, s.rows.get(f.name())) else {
            continue;
        };
        let per_key: Vec<(&str, Vec<family::MetricOut>)> = keyed
            .iter()
            .map(|(k, sec)| {
                let m = family::section_metrics(f.schema, sec, family::Scope::Host);
                (k.as_str(), m)
            })
            .collect();
        family::write_out(&family::row_metrics(rows.label, &per_key), &mut o);
    }

    banyandb_metrics(s, &mut o);

    let comms = t.comm_series();
    if !comms.is_empty() {
        for f in family::ALL {
            if s.section(f.name()).is_none() {
                continue;
            }
            let rows: Vec<(&str, Option<&[u64]>)> = comms
                .iter()
                .map(|(c, p)| (c.as_str(), p.of(f.name())))
                .collect();
            family::write_proc_metrics(f, &rows, &mut o);
        }
    }

    o.family("iomon_ticks", Kind::Counter, "Drain ticks since start.");
    o.counter("iomon_ticks", &[], t.ticks);
    o.family(
        "iomon_drain_duration_seconds",
        Kind::Gauge,
        "Time the last drain took.",
    );
    o.gauge("iomon_drain_duration_seconds", &[], inp.drain_seconds);
    o.family(
        "iomon_drain_lag_seconds",
        Kind::Gauge,
        "How late the last drain started after its deadline.",
    );
    o.gauge("iomon_drain_lag_seconds", &[], inp.drain_lag_seconds);
    if let Some((buckets, sum)) = inp.loop_turns {
        o.family(
            "iomon_loop_turn_seconds",
            Kind::Histogram,
            "Time each turn of the event loop kept it from serving clients (a request arriving meanwhile waits for the rest of the turn).",
        );
        o.histogram("iomon_loop_turn_seconds", &[], buckets, sum);
    }
    o.family(
        "iomon_proc_read_errors",
        Kind::Counter,
        "Reads of the kernel's per-process map that failed (host-wide numbers stay whole).",
    );
    o.counter("iomon_proc_read_errors", &[], s.proc_read_errors);
    let tr = &t.truncated;
    for (name, help, v) in [
        ("iomon_sample_procs_truncated", "Processes left out of stored Samples past the top-K of a tick (their numbers are in the totals and the per-name series).", tr.sample_procs),
        ("iomon_proc_table_forgotten", "Per-process totals forgotten: idle past daemon.proc_idle_ttl, or over daemon.proc_table_max.", tr.proc_table),
        ("iomon_process_names_forgotten", "Process names forgotten by the per-name table (over daemon.proc_table_max names).", tr.names),
        ("iomon_process_name_series_ended", "Per-name series that ended: idle past daemon.proc_idle_ttl, or replaced by a busier name (metrics.max_series).", tr.name_series),
        ("iomon_files_truncated", "Targets' files left out of stored Samples past each interval's top files (files.top).", s.files_truncated),
        ("iomon_files_unresolved", "Targets' files of an interval whose path was not found (not open by the target, not under files.data_dirs).", s.files_unresolved),
    ] {
        o.family(name, Kind::Counter, help);
        o.counter(name, &[], v);
    }
    o.family(
        "iomon_bpf_map_entries",
        Kind::Gauge,
        "Entries in a BPF map (procs, target_files: entries drained at the last tick; evicted_blocks: at the last minute's expiry; the others: counted every 10 s off the event loop).",
    );
    for (m, e, _) in inp.maps {
        o.gauge("iomon_bpf_map_entries", &[("map", m)], *e as f64);
    }
    o.family(
        "iomon_bpf_map_capacity",
        Kind::Gauge,
        "Capacity (max_entries) of a BPF map.",
    );
    for (m, _, c) in inp.maps {
        o.gauge("iomon_bpf_map_capacity", &[("map", m)], *c as f64);
    }
    if let Some(st) = inp.store {
        o.family(
            "iomon_store_bytes",
            Kind::Gauge,
            "Size of the history store on disk.",
        );
        o.gauge("iomon_store_bytes", &[], st.bytes as f64);
        o.family(
            "iomon_store_write_errors",
            Kind::Counter,
            "History store writes that failed (retried).",
        );
        o.counter("iomon_store_write_errors", &[], st.write_errors);
    }
    if let Some(e) = inp.export {
        write_export(e, &mut o);
    }
    let ss = inp.self_stats;
    o.family(
        "process_cpu_seconds",
        Kind::Counter,
        "User and system CPU time of iomond.",
    );
    o.counter_f64("process_cpu_seconds", &[], ss.cpu_seconds);
    o.family(
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory of iomond.",
    );
    o.gauge("process_resident_memory_bytes", &[], ss.rss_bytes as f64);
    o.family(
        "process_open_fds",
        Kind::Gauge,
        "Open file descriptors of iomond (counted every 10 s, off the event loop).",
    );
    o.gauge("process_open_fds", &[], ss.open_fds as f64);
    o.family(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of iomond, seconds since the epoch.",
    );
    o.gauge("process_start_time_seconds", &[], ss.start_time_seconds);
    o.finish()
}

/// The BanyanDB view: the targets' files by engine, group and class
/// (label `kind`: index, data, other), each series only where the family
/// that counts it was attached; the BanyanDB processes' memory cgroups and
/// the host's file cache.
fn banyandb_metrics(s: &crate::sample::Sample, o: &mut Out) {
    use crate::banyandb::field;
    let on = |f: &str| s.section(f).is_some();
    let labels = |r: &crate::banyandb::Row| -> Vec<(&'static str, String)> {
        vec![
            ("target", r.target.clone()),
            ("engine", r.engine.clone()),
            ("group", r.group.clone()),
            ("kind", r.class().name().to_string()),
        ]
    };
    /// A series: an extra label, the field, a field subtracted from it.
    type Part<'a> = (Option<(&'a str, &'a str)>, usize, Option<usize>);
    type Series<'a> = (&'a str, &'a str, &'a str, Vec<Part<'a>>);
    // (metric, family it needs, help, [(extra label, field, minus field)]).
    let mut series: Vec<Series> = vec![
        (
            "iomon_banyandb_read_pages",
            "pagecache",
            "Pages of BanyanDB's files the targets' buffered reads asked for, by result (hit, miss).",
            vec![
                (Some(("result", "hit")), field::ASKED, Some(field::MISSED)),
                (Some(("result", "miss")), field::MISSED, None),
            ],
        ),
        (
            "iomon_banyandb_fault_pages",
            "mmap",
            "Pages of BanyanDB's files the targets' page faults on mappings looked up, by result (hit, miss: read in).",
            vec![
                (Some(("result", "hit")), field::MAP_ASKED, Some(field::MAP_MISSED)),
                (Some(("result", "miss")), field::MAP_MISSED, None),
            ],
        ),
        (
            "iomon_banyandb_dontneed_calls",
            "fadvise",
            "The targets' POSIX_FADV_DONTNEED calls on BanyanDB's files.",
            vec![(None, field::DONTNEED_CALLS, None)],
        ),
        (
            "iomon_banyandb_dontneed_covered_pages",
            "fadvise",
            "Pages of BanyanDB's files the targets' DONTNEED calls covered.",
            vec![(None, field::DONTNEED_COVERED, None)],
        ),
        (
            "iomon_banyandb_dontneed_dropped_pages",
            "fadvise",
            "Pages of BanyanDB's files the targets' DONTNEED calls dropped from the page cache.",
            vec![(None, field::DONTNEED_DROPPED, None)],
        ),
    ];
    let by_cause = |base: usize| -> Vec<Part> {
        field::CAUSES
            .iter()
            .enumerate()
            .map(|(i, c)| (Some(("cause", *c)), base + i, None))
            .collect()
    };
    series.push((
        "iomon_banyandb_evicted_pages",
        "pagecache",
        "Pages of BanyanDB's files (the targets' in the last hour) removed from the page cache, by cause (reclaim, fadvise, truncate, other).",
        by_cause(field::EVICTED_BY),
    ));
    series.push((
        "iomon_banyandb_refault_pages",
        "pagecache",
        "Pages of BanyanDB's files the targets read back within files.refault_window after they were evicted, by the eviction's cause.",
        by_cause(field::REFAULT_BY),
    ));
    for (name, family, help, parts) in series {
        if !on(family) || s.banyandb.is_empty() {
            continue;
        }
        o.family(name, Kind::Counter, help);
        for r in &s.banyandb {
            let base = labels(r);
            for (extra, f, minus) in &parts {
                let mut l: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
                if let Some(e) = extra {
                    l.push(*e);
                }
                let v = r
                    .get(*f)
                    .saturating_sub(minus.map(|m| r.get(m)).unwrap_or(0));
                o.counter(name, &l, v);
            }
        }
    }
    if !s.memcg.is_empty() {
        type Gauge = (
            &'static str,
            &'static str,
            fn(&crate::banyandb::memcg::MemcgSample) -> Option<u64>,
        );
        let gauges: [Gauge; 6] = [
            ("iomon_memcg_memory_max_bytes", "memory.max of a BanyanDB process's cgroup (absent: max, no limit).", |m| m.max_bytes),
            ("iomon_memcg_memory_current_bytes", "memory.current of a BanyanDB process's cgroup.", |m| Some(m.current_bytes)),
            ("iomon_memcg_file_bytes", "File cache of a BanyanDB process's cgroup (memory.stat file).", |m| Some(m.file_bytes)),
            ("iomon_memcg_active_file_bytes", "Active file cache of the cgroup (memory.stat active_file).", |m| Some(m.active_file_bytes)),
            ("iomon_memcg_inactive_file_bytes", "Inactive file cache of the cgroup (memory.stat inactive_file).", |m| Some(m.inactive_file_bytes)),
            ("iomon_banyandb_dontneed_threshold_bytes", "The size above which BanyanDB drops a merged part with DONTNEED, as it derives it: 1 % of (memory.max x --allowed-percent), at least 10 MiB, 64 MiB when the limit cannot be read.", |m| Some(m.threshold_bytes)),
        ];
        for (name, help, get) in gauges {
            o.family(name, Kind::Gauge, help);
            for m in &s.memcg {
                if let Some(v) = get(m) {
                    o.gauge(name, &[("cgroup", &m.cgroup)], v as f64);
                }
            }
        }
        for (name, help, get) in [
            ("iomon_memcg_workingset_refault_file_pages", "The cgroup's file pages refaulted, as the kernel counts them (memory.stat workingset_refault_file), since iomond started.", (|m| m.refault_file) as fn(&crate::banyandb::memcg::MemcgSample) -> u64),
            ("iomon_memcg_workingset_activate_file_pages", "The cgroup's refaulted file pages activated at once (memory.stat workingset_activate_file), since iomond started.", |m| m.activate_file),
        ] {
            o.family(name, Kind::Counter, help);
            for m in &s.memcg {
                o.counter(name, &[("cgroup", &m.cgroup)], get(m));
            }
        }
    }
    if let Some(h) = &s.host_mem {
        o.family(
            "iomon_host_file_pages",
            Kind::Gauge,
            "The host's file cache (/proc/vmstat nr_active_file, nr_inactive_file).",
        );
        o.gauge(
            "iomon_host_file_pages",
            &[("state", "active")],
            h.active_file as f64,
        );
        o.gauge(
            "iomon_host_file_pages",
            &[("state", "inactive")],
            h.inactive_file as f64,
        );
        o.family(
            "iomon_host_workingset_refault_file_pages",
            Kind::Counter,
            "File pages refaulted host-wide (/proc/vmstat workingset_refault_file), since iomond started.",
        );
        o.counter(
            "iomon_host_workingset_refault_file_pages",
            &[],
            h.refault_file,
        );
    }
}

/// Probe status: configured, available on this kernel, the route in use,
/// and attached or not — apart, so that a family this kernel lacks is not
/// an alert.
fn probe_metrics(probes: &[FamilyStatus], o: &mut Out) {
    o.family(
        "iomon_probe_family_enabled",
        Kind::Gauge,
        "1 if the probe family is switched on in the config.",
    );
    for f in probes {
        let on = !matches!(f.state, FamilyState::Disabled);
        o.gauge(
            "iomon_probe_family_enabled",
            &[("family", &f.family)],
            if on { 1.0 } else { 0.0 },
        );
    }
    o.family(
        "iomon_probe_family_available",
        Kind::Gauge,
        "1 if this kernel has a route for the probe family, 0 if it lacks what every route needs (not an error: see iomonctl probes).",
    );
    for f in probes {
        o.gauge(
            "iomon_probe_family_available",
            &[("family", &f.family)],
            if f.available() { 1.0 } else { 0.0 },
        );
    }
    o.family(
        "iomon_probe_family_route",
        Kind::Gauge,
        "The route (attach points) the probe family uses on this kernel: always 1.",
    );
    for f in probes {
        if let (Some(route), FamilyState::Attached) = (&f.route, &f.state) {
            o.gauge(
                "iomon_probe_family_route",
                &[("family", &f.family), ("route", route)],
                1.0,
            );
        }
    }
    o.family(
        "iomon_probe_attached",
        Kind::Gauge,
        "1 if the BPF program is attached, 0 if it should be and is not (see iomonctl probes for why). Families switched off or that this kernel lacks have no series.",
    );
    for f in probes {
        if matches!(f.state, FamilyState::Attached | FamilyState::Failed(_)) {
            // A program waiting on demand is not missing: no series.
            for p in f.programs.iter().filter(|p| !p.is_waiting()) {
                o.gauge(
                    "iomon_probe_attached",
                    &[("family", &f.family), ("program", &p.name)],
                    if p.attached { 1.0 } else { 0.0 },
                );
            }
        }
    }
    o.family(
        "iomon_bpf_program_missed_runs",
        Kind::Counter,
        "Events the kernel did not run the BPF program for, because a BPF program or a bpf() map operation was already running on that CPU: the family's counts are low by as many events (counted by the kernel for tp_btf programs from 5.12, classic tracepoints from 6.7).",
    );
    for f in probes {
        for p in &f.programs {
            if let Some(n) = p.missed {
                o.counter(
                    "iomon_bpf_program_missed_runs",
                    &[("family", &f.family), ("program", &p.name)],
                    n,
                );
            }
        }
    }
    let stats: Vec<_> = probes
        .iter()
        .flat_map(|f| f.programs.iter().map(move |p| (f, p)))
        .filter(|(_, p)| p.run_count.is_some())
        .collect();
    if !stats.is_empty() {
        o.family(
            "iomon_bpf_program_runs",
            Kind::Counter,
            "Times the BPF program ran (kernel.bpf_stats_enabled=1).",
        );
        for (f, p) in &stats {
            o.counter(
                "iomon_bpf_program_runs",
                &[("family", &f.family), ("program", &p.name)],
                p.run_count.unwrap_or(0),
            );
        }
        o.family(
            "iomon_bpf_program_run_seconds",
            Kind::Counter,
            "Time spent in the BPF program (kernel.bpf_stats_enabled=1).",
        );
        for (f, p) in &stats {
            o.counter_f64(
                "iomon_bpf_program_run_seconds",
                &[("family", &f.family), ("program", &p.name)],
                p.run_time_ns.unwrap_or(0) as f64 / 1e9,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_prometheus_accept_headers() {
        // What Prometheus 2.x/3.x sends.
        let prom = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.1,text/plain;q=0.9")),
            Format::Prometheus
        );
    }

    #[test]
    fn unavailable_families_are_absent_not_zero() {
        let totals = Totals::new(1_000, 10, 1000);
        let self_stats = SelfStats::default();
        let text = render(
            &Inputs {
                totals: &totals,
                probes: &[],
                store: None,
                export: None,
                drain_seconds: 0.0,
                drain_lag_seconds: 0.0,
                loop_turns: None,
                page_size_bytes: 4096,
                maps: &[],
                self_stats: &self_stats,
            },
            Format::OpenMetrics,
        );
        assert!(!text.contains("iomon_page_cache_read_pages"));
        assert!(text.ends_with("# EOF\n"));
        assert!(text
            .contains("# TYPE iomon_ticks counter\niomon_ticks_total 0\niomon_ticks_created 1\n"));
    }
}
