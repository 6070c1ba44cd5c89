//! Prometheus text (0.0.4) and OpenMetrics 1.0 rendering of the in-memory
//! totals. Pure: a function of its inputs, rendered once per tick and served
//! as often as asked.
//!
//! Base units, `_total` counters, `# HELP`/`# TYPE` on every family, label
//! values escaped, labels of bounded cardinality only (no pid label: per
//! process numbers go by `comm`, capped, with an `other` series).

use std::fmt::Write;

use crate::family;
use crate::probes::{bucket_upper_us, FamilyState, FamilyStatus, HIST_BUCKETS};
use crate::proto::StoreStatus;
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
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The text being rendered; families write their metrics through it.
pub struct Out {
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
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
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

    pub fn counter(&mut self, name: &str, l: &[(&str, &str)], v: u64) {
        self.counter_f64(name, l, v as f64);
    }

    /// A counter of a non-integer quantity (seconds).
    pub fn counter_f64(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        self.line(&format!("{name}_total"), l, v);
        if self.om {
            self.line(&format!("{name}_created"), l, self.created);
        }
    }

    pub fn histogram(&mut self, name: &str, l: &[(&str, &str)], buckets: &[u64], sum_ns: u64) {
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
    for f in family::ALL {
        (f.metrics)(s, &mut o);
    }

    let comms = t.comm_series();
    if !comms.is_empty() {
        for f in family::ALL {
            (f.proc_metrics)(s, &comms, &mut o);
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
