//! Prometheus text (0.0.4) and OpenMetrics 1.0 rendering of the in-memory
//! totals. Pure: a function of its inputs, rendered once per tick and served
//! as often as asked.
//!
//! Base units, `_total` counters, `# HELP`/`# TYPE` on every family, label
//! values escaped, labels of bounded cardinality only (no pid label: per
//! process numbers go by `comm`, capped, with an `other` series).

use std::fmt::Write;

use crate::family::fadvise::{ADVICE, RESULT};
use crate::family::reads::SYSCALLS;
use crate::probes::{bucket_upper_us, FamilyState, FamilyStatus, HIST_BUCKETS};
use crate::proto::StoreStatus;
use crate::sample::ProcSample;
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
    pub fn read() -> SelfStats {
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
                let boot = std::fs::read_to_string("/proc/stat")
                    .ok()
                    .and_then(|t| {
                        t.lines().find_map(|l| {
                            l.strip_prefix("btime ")
                                .and_then(|v| v.trim().parse::<f64>().ok())
                        })
                    })
                    .unwrap_or(0.0);
                s.start_time_seconds = boot + num(19) / tick;
            }
        }
        s.open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        s
    }
}

pub struct Inputs<'a> {
    pub totals: &'a Totals,
    pub probes: &'a [FamilyStatus],
    pub store: Option<&'a StoreStatus>,
    pub drain_seconds: f64,
    pub drain_lag_seconds: f64,
    pub maps: &'a [MapGauge],
    pub self_stats: &'a SelfStats,
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

struct Out {
    s: String,
    om: bool,
    created: f64,
}

pub fn escape_label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn labels(l: &[(&str, &str)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Out {
    /// `name` is the family name without `_total`.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let (t, shown) = match kind {
            Kind::Counter if self.om => ("counter", name.to_string()),
            Kind::Counter => ("counter", format!("{name}_total")),
            Kind::Gauge => ("gauge", name.to_string()),
            Kind::Histogram => ("histogram", name.to_string()),
        };
        let _ = writeln!(self.s, "# HELP {shown} {help}");
        let _ = writeln!(self.s, "# TYPE {shown} {t}");
    }

    fn line(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.s, "{name}{} {}", labels(l), num(v));
    }

    fn counter(&mut self, name: &str, l: &[(&str, &str)], v: u64) {
        self.line(&format!("{name}_total"), l, v as f64);
        if self.om {
            self.line(&format!("{name}_created"), l, self.created);
        }
    }

    fn histogram(&mut self, name: &str, l: &[(&str, &str)], buckets: &[u64], sum_ns: u64) {
        let mut cum = 0u64;
        for b in 0..HIST_BUCKETS {
            cum += buckets.get(b).copied().unwrap_or(0);
            let le = match bucket_upper_us(b) {
                Some(us) => format!("{}", us as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            let mut ll: Vec<(&str, &str)> = l.to_vec();
            ll.push(("le", &le));
            self.line(&format!("{name}_bucket"), &ll, cum as f64);
        }
        self.line(&format!("{name}_count"), l, cum as f64);
        self.line(&format!("{name}_sum"), l, sum_ns as f64 / 1e9);
        if self.om {
            self.line(&format!("{name}_created"), l, self.created);
        }
    }
}

pub fn render(inp: &Inputs, format: Format) -> String {
    let t = inp.totals;
    let mut o = Out {
        s: String::with_capacity(16 * 1024),
        om: format == Format::OpenMetrics,
        created: t.started_ms as f64 / 1000.0,
    };

    o.family(
        "iomon_build_info",
        Kind::Gauge,
        "iomon build: version of the running iomond.",
    );
    o.line(
        "iomon_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    o.family(
        "iomon_probe_attached",
        Kind::Gauge,
        "1 if the BPF program is attached, 0 if not (see iomonctl probes for why).",
    );
    for f in inp.probes {
        for p in &f.programs {
            o.line(
                "iomon_probe_attached",
                &[("family", f.family.name()), ("program", &p.name)],
                if p.attached { 1.0 } else { 0.0 },
            );
        }
    }
    o.family(
        "iomon_probe_family_enabled",
        Kind::Gauge,
        "1 if the probe family is switched on in the config.",
    );
    for f in inp.probes {
        let on = !matches!(f.state, FamilyState::Disabled);
        o.line(
            "iomon_probe_family_enabled",
            &[("family", f.family.name())],
            if on { 1.0 } else { 0.0 },
        );
    }
    let stats: Vec<_> = inp
        .probes
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
                &[("family", f.family.name()), ("program", &p.name)],
                p.run_count.unwrap_or(0),
            );
        }
        o.family(
            "iomon_bpf_program_run_seconds",
            Kind::Counter,
            "Time spent in the BPF program (kernel.bpf_stats_enabled=1).",
        );
        for (f, p) in &stats {
            let v = p.run_time_ns.unwrap_or(0) as f64 / 1e9;
            o.line(
                "iomon_bpf_program_run_seconds_total",
                &[("family", f.family.name()), ("program", &p.name)],
                v,
            );
            if o.om {
                o.line(
                    "iomon_bpf_program_run_seconds_created",
                    &[("family", f.family.name()), ("program", &p.name)],
                    o.created,
                );
            }
        }
    }

    let s = &t.sum;
    // Families absent from the sum were never attached: their metrics are
    // left out (unavailable), never exported as zero.
    if let Some(f) = &s.fadvise {
        o.family(
            "iomon_fadvise_calls",
            Kind::Counter,
            "posix_fadvise calls by advice and result.",
        );
        for (a, row) in f.calls.iter().enumerate() {
            for (r, v) in row.iter().enumerate() {
                o.counter(
                    "iomon_fadvise_calls",
                    &[("advice", ADVICE[a]), ("result", RESULT[r])],
                    *v,
                );
            }
        }
    }
    if let Some(r) = &s.reads {
        o.family(
            "iomon_read_calls",
            Kind::Counter,
            "Read syscalls by syscall.",
        );
        for (i, v) in r.calls.iter().enumerate() {
            o.counter("iomon_read_calls", &[("syscall", SYSCALLS[i])], *v);
        }
        o.family(
            "iomon_read_bytes",
            Kind::Counter,
            "Bytes returned by read syscalls.",
        );
        for (i, v) in r.bytes.iter().enumerate() {
            o.counter("iomon_read_bytes", &[("syscall", SYSCALLS[i])], *v);
        }
        o.family(
            "iomon_read_errors",
            Kind::Counter,
            "Read syscalls that returned an error.",
        );
        o.counter("iomon_read_errors", &[], r.errors);
        o.family(
            "iomon_read_latency_seconds",
            Kind::Histogram,
            "Read syscall latency.",
        );
        o.histogram(
            "iomon_read_latency_seconds",
            &[],
            &r.latency_hist,
            r.latency_ns_sum,
        );
    }
    if let Some(p) = &s.pagecache {
        o.family("iomon_page_cache_read_pages", Kind::Counter, "Pages buffered reads asked for: hit = found cached, miss = brought in from storage by the read or its read-ahead.");
        o.counter(
            "iomon_page_cache_read_pages",
            &[("result", "hit")],
            p.hits(),
        );
        o.counter(
            "iomon_page_cache_read_pages",
            &[("result", "miss")],
            p.missed(),
        );
        o.family(
            "iomon_page_cache_readahead_pages",
            Kind::Counter,
            "Pages reads brought in beyond what they asked for (speculative read-ahead).",
        );
        o.counter("iomon_page_cache_readahead_pages", &[], p.readahead);
        o.family(
            "iomon_page_cache_readahead_used_pages",
            Kind::Counter,
            "Read-ahead pages that a later read asked for.",
        );
        o.counter(
            "iomon_page_cache_readahead_used_pages",
            &[],
            p.missed_readahead,
        );
        o.family(
            "iomon_page_cache_added_pages",
            Kind::Counter,
            "Pages added to the page cache (reads, writes, faults).",
        );
        o.counter("iomon_page_cache_added_pages", &[], p.added);
        o.family(
            "iomon_page_cache_evicted_pages",
            Kind::Counter,
            "Pages removed from the page cache (reclaim, truncate, fadvise DONTNEED).",
        );
        o.counter("iomon_page_cache_evicted_pages", &[], p.deleted);
    }
    if let Some(r) = &s.reclaim {
        o.family(
            "iomon_vmscan_scanned_pages",
            Kind::Counter,
            "Inactive LRU pages scanned by reclaim.",
        );
        o.counter(
            "iomon_vmscan_scanned_pages",
            &[("reclaimer", "kswapd")],
            r.scanned_kswapd,
        );
        o.counter(
            "iomon_vmscan_scanned_pages",
            &[("reclaimer", "direct")],
            r.scanned_direct,
        );
        o.family(
            "iomon_vmscan_reclaimed_pages",
            Kind::Counter,
            "Pages reclaimed.",
        );
        o.counter(
            "iomon_vmscan_reclaimed_pages",
            &[("reclaimer", "kswapd")],
            r.reclaimed_kswapd,
        );
        o.counter(
            "iomon_vmscan_reclaimed_pages",
            &[("reclaimer", "direct")],
            r.reclaimed_direct,
        );
        o.family(
            "iomon_direct_reclaim_stalls",
            Kind::Counter,
            "Tasks that stalled in reclaim: global direct reclaim or a memory cgroup's limit.",
        );
        o.counter(
            "iomon_direct_reclaim_stalls",
            &[("kind", "global")],
            r.stalls_direct,
        );
        o.counter(
            "iomon_direct_reclaim_stalls",
            &[("kind", "memcg")],
            r.stalls_memcg,
        );
        o.family(
            "iomon_direct_reclaim_duration_seconds",
            Kind::Histogram,
            "Time tasks spent stalled in reclaim.",
        );
        o.histogram(
            "iomon_direct_reclaim_duration_seconds",
            &[],
            &r.stall_hist,
            r.stall_ns_sum,
        );
    }

    let comms = t.comm_series();
    if !comms.is_empty() {
        let has = |f: fn(&ProcSample) -> u64| comms.iter().any(|(_, p)| f(p) > 0);
        if s.fadvise.is_some() || has(ProcSample::fadvise_total) {
            o.family("iomon_process_fadvise_calls", Kind::Counter, "posix_fadvise calls per process name (targets and busiest; the rest under comm=\"other\").");
            for (c, p) in &comms {
                for (a, row) in p.fadvise.iter().enumerate() {
                    let v = row[0] + row[1];
                    if v > 0 {
                        o.counter(
                            "iomon_process_fadvise_calls",
                            &[("comm", c), ("advice", ADVICE[a])],
                            v,
                        );
                    }
                }
            }
        }
        if s.reads.is_some() {
            o.family(
                "iomon_process_read_calls",
                Kind::Counter,
                "Read syscalls per process name.",
            );
            for (c, p) in &comms {
                o.counter("iomon_process_read_calls", &[("comm", c)], p.read_calls);
            }
            o.family(
                "iomon_process_read_bytes",
                Kind::Counter,
                "Bytes read per process name.",
            );
            for (c, p) in &comms {
                o.counter("iomon_process_read_bytes", &[("comm", c)], p.read_bytes);
            }
        }
        if s.pagecache.is_some() {
            o.family(
                "iomon_process_page_cache_read_pages",
                Kind::Counter,
                "Pages buffered reads asked for, per process name.",
            );
            for (c, p) in &comms {
                o.counter(
                    "iomon_process_page_cache_read_pages",
                    &[("comm", c), ("result", "hit")],
                    p.pc_asked.saturating_sub(p.pc_missed),
                );
                o.counter(
                    "iomon_process_page_cache_read_pages",
                    &[("comm", c), ("result", "miss")],
                    p.pc_missed.min(p.pc_asked),
                );
            }
        }
    }

    o.family("iomon_ticks", Kind::Counter, "Drain ticks since start.");
    o.counter("iomon_ticks", &[], t.ticks);
    o.family(
        "iomon_drain_duration_seconds",
        Kind::Gauge,
        "Time the last drain took.",
    );
    o.line("iomon_drain_duration_seconds", &[], inp.drain_seconds);
    o.family(
        "iomon_drain_lag_seconds",
        Kind::Gauge,
        "How late the last drain started after its deadline.",
    );
    o.line("iomon_drain_lag_seconds", &[], inp.drain_lag_seconds);
    o.family(
        "iomon_proc_dropped",
        Kind::Counter,
        "Per-process increments the kernel could not record (per-process map full).",
    );
    o.counter("iomon_proc_dropped", &[], s.procs_dropped);
    o.family(
        "iomon_bpf_map_entries",
        Kind::Gauge,
        "Entries in a BPF map (procs: entries drained at the last tick).",
    );
    for (m, e, _) in inp.maps {
        o.line("iomon_bpf_map_entries", &[("map", m)], *e as f64);
    }
    o.family(
        "iomon_bpf_map_capacity",
        Kind::Gauge,
        "Capacity (max_entries) of a BPF map.",
    );
    for (m, _, c) in inp.maps {
        o.line("iomon_bpf_map_capacity", &[("map", m)], *c as f64);
    }
    if let Some(st) = inp.store {
        o.family(
            "iomon_store_bytes",
            Kind::Gauge,
            "Size of the history store on disk.",
        );
        o.line("iomon_store_bytes", &[], st.bytes as f64);
        o.family(
            "iomon_store_write_errors",
            Kind::Counter,
            "History store writes that failed (retried).",
        );
        o.counter("iomon_store_write_errors", &[], st.write_errors);
    }
    let ss = inp.self_stats;
    o.family(
        "process_cpu_seconds",
        Kind::Counter,
        "User and system CPU time of iomond.",
    );
    o.line("process_cpu_seconds_total", &[], ss.cpu_seconds);
    if o.om {
        o.line("process_cpu_seconds_created", &[], o.created);
    }
    o.family(
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory of iomond.",
    );
    o.line("process_resident_memory_bytes", &[], ss.rss_bytes as f64);
    o.family(
        "process_open_fds",
        Kind::Gauge,
        "Open file descriptors of iomond.",
    );
    o.line("process_open_fds", &[], ss.open_fds as f64);
    o.family(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of iomond, seconds since the epoch.",
    );
    o.line("process_start_time_seconds", &[], ss.start_time_seconds);
    if o.om {
        o.s.push_str("# EOF\n");
    }
    o.s
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
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
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
                drain_seconds: 0.0,
                drain_lag_seconds: 0.0,
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
