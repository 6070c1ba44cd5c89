//! Read syscalls: calls, bytes and latency.

use serde::{Deserialize, Serialize};

use super::{add_slice, Deltas, Family, FamilyId, Program, Series, Shown, Summary};
use crate::exposition::{Kind, Out};
use crate::probes::hist_quantile_us;
use crate::probes::{counter as c, hist as h};
use crate::sample::{ProcSample, Sample};

macro_rules! pair {
    ($($sys:literal),*) => {
        &[$(
            Program { name: concat!("read_enter_", $sys), event: concat!("tracepoint:syscalls:sys_enter_", $sys) },
            Program { name: concat!("read_exit_", $sys), event: concat!("tracepoint:syscalls:sys_exit_", $sys) },
        )*]
    };
}

pub const FAMILY: Family = Family {
    id: FamilyId::Reads,
    default_on: false,
    about: "read syscalls: calls, bytes, latency (syscall tracepoints: taxes every syscall on the host)",
    programs: pair!("read", "pread64", "readv", "preadv", "preadv2"),
    fill: |s, d| s.reads = Some(ReadStats::from_deltas(d)),
    summary,
    series: &[
        Series {
            name: "read_calls",
            value: |s| Some(s.reads.as_ref()?.total_calls() as f64),
            ratio: false,
        },
        Series {
            name: "read_bytes",
            value: |s| Some(s.reads.as_ref()?.total_bytes() as f64),
            ratio: false,
        },
    ],
    metrics,
    proc_metrics,
    tick,
};

const CALL_ROWS: [&str; 5] = [
    "read calls",
    "pread64 calls",
    "readv calls",
    "preadv calls",
    "preadv2 calls",
];
const BYTE_ROWS: [&str; 5] = [
    "read bytes",
    "pread64 bytes",
    "readv bytes",
    "preadv bytes",
    "preadv2 bytes",
];

fn summary(s: &Sample) -> Option<Summary> {
    let r = s.reads.as_ref()?;
    let mut rows = Vec::new();
    for i in 0..5 {
        rows.push((CALL_ROWS[i], Shown::Count(r.calls[i])));
        rows.push((BYTE_ROWS[i], Shown::Count(r.bytes[i])));
    }
    rows.push(("errors", Shown::Count(r.errors)));
    for (q, name) in [
        (0.5, "latency p50"),
        (0.9, "latency p90"),
        (0.99, "latency p99"),
    ] {
        rows.push((name, Shown::Micros(hist_quantile_us(&r.latency_hist, q))));
    }
    Some(rows)
}

fn metrics(s: &Sample, o: &mut Out) {
    let Some(r) = &s.reads else { return };
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

fn proc_metrics(s: &Sample, comms: &[(String, ProcSample)], o: &mut Out) {
    if s.reads.is_none() {
        return;
    }
    o.family(
        "iomon_process_read_calls",
        Kind::Counter,
        "Read syscalls per process name.",
    );
    for (c, p) in comms {
        o.counter("iomon_process_read_calls", &[("comm", c)], p.read_calls);
    }
    o.family(
        "iomon_process_read_bytes",
        Kind::Counter,
        "Bytes read per process name.",
    );
    for (c, p) in comms {
        o.counter("iomon_process_read_bytes", &[("comm", c)], p.read_bytes);
    }
}

fn tick(s: &Sample) -> Option<String> {
    let r = s.reads.as_ref()?;
    let secs = s.seconds();
    Some(format!(
        "reads {:.0}/s {:.1} MiB/s",
        r.total_calls() as f64 / secs,
        r.total_bytes() as f64 / secs / 1048576.0
    ))
}

/// Syscall names, indexed as the kernel side counts them.
pub const SYSCALLS: [&str; 5] = ["read", "pread64", "readv", "preadv", "preadv2"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadStats {
    pub calls: [u64; 5],
    pub bytes: [u64; 5],
    pub errors: u64,
    pub latency_ns_sum: u64,
    /// log2 buckets in microseconds (see `probes::bucket_upper_us`).
    pub latency_hist: Vec<u64>,
}

impl ReadStats {
    pub fn from_deltas(d: &Deltas) -> Self {
        let mut s = ReadStats {
            errors: d.counter(c::READ_ERRORS),
            latency_ns_sum: d.counter(c::READ_LATENCY_NS),
            latency_hist: d.hist(h::READ_LATENCY),
            ..Default::default()
        };
        for i in 0..5 {
            s.calls[i] = d.counter(c::READ_CALLS_BASE + i as u32);
            s.bytes[i] = d.counter(c::READ_BYTES_BASE + i as u32);
        }
        s
    }

    pub fn merge(&mut self, o: &Self) {
        for i in 0..5 {
            self.calls[i] += o.calls[i];
            self.bytes[i] += o.bytes[i];
        }
        self.errors += o.errors;
        self.latency_ns_sum += o.latency_ns_sum;
        add_slice(&mut self.latency_hist, &o.latency_hist);
    }

    pub fn total_calls(&self) -> u64 {
        self.calls.iter().sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }
}
