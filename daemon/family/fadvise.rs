//! `posix_fadvise` calls by advice value and result.

use serde::{Deserialize, Serialize};

use super::{Deltas, Family, FamilyId, Program, Series, Shown, Summary};
use crate::exposition::{Kind, Out};
use crate::probes::counter as c;
use crate::sample::{ProcSample, Sample};

pub const FAMILY: Family = Family {
    id: FamilyId::Fadvise,
    default_on: true,
    about: "posix_fadvise calls by advice and result",
    programs: &[Program {
        name: "fadvise_exit",
        event: "tracepoint:syscalls:sys_exit_fadvise64",
    }],
    fill: |s, d| s.fadvise = Some(FadviseStats::from_deltas(d)),
    summary,
    series: &[
        Series {
            name: "fadvise_calls",
            value: |s| Some(s.fadvise.as_ref()?.total() as f64),
            ratio: false,
        },
        Series {
            name: "dontneed_calls",
            value: |s| Some(s.fadvise.as_ref()?.of_advice(4) as f64),
            ratio: false,
        },
    ],
    metrics,
    proc_metrics,
    tick,
};

fn summary(s: &Sample) -> Option<Summary> {
    let f = s.fadvise.as_ref()?;
    let mut rows: Vec<_> = ADVICE
        .iter()
        .enumerate()
        .map(|(a, name)| (*name, Shown::Count(f.of_advice(a))))
        .collect();
    rows.push(("failed", Shown::Count(f.calls.iter().map(|r| r[1]).sum())));
    Some(rows)
}

fn metrics(s: &Sample, o: &mut Out) {
    let Some(f) = &s.fadvise else { return };
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

fn proc_metrics(s: &Sample, comms: &[(String, ProcSample)], o: &mut Out) {
    if !(s.fadvise.is_some() || comms.iter().any(|(_, p)| p.fadvise_total() > 0)) {
        return;
    }
    o.family("iomon_process_fadvise_calls", Kind::Counter, "posix_fadvise calls per process name (targets and busiest; the rest under comm=\"other\").");
    for (c, p) in comms {
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

fn tick(s: &Sample) -> Option<String> {
    let f = s.fadvise.as_ref()?;
    Some(format!(
        "fadvise {:.0}/s (dontneed {})",
        f.total() as f64 / s.seconds(),
        f.of_advice(4)
    ))
}

/// Advice names, indexed like the kernel's POSIX_FADV_* values; the last
/// slot counts out-of-range values.
pub const ADVICE: [&str; 7] = [
    "normal",
    "random",
    "sequential",
    "willneed",
    "dontneed",
    "noreuse",
    "invalid",
];
pub const RESULT: [&str; 2] = ["ok", "error"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FadviseStats {
    /// `calls[advice][result]`, result 0 = ok, 1 = error.
    pub calls: [[u64; 2]; 7],
}

impl FadviseStats {
    pub fn from_deltas(d: &Deltas) -> Self {
        let mut calls = [[0; 2]; 7];
        for (advice, row) in calls.iter_mut().enumerate() {
            for (result, v) in row.iter_mut().enumerate() {
                *v = d.counter(c::FADV_BASE + (advice * 2 + result) as u32);
            }
        }
        FadviseStats { calls }
    }

    pub fn merge(&mut self, o: &Self) {
        for (a, b) in self.calls.iter_mut().zip(&o.calls) {
            a[0] += b[0];
            a[1] += b[1];
        }
    }

    pub fn total(&self) -> u64 {
        self.calls.iter().map(|r| r[0] + r[1]).sum()
    }

    pub fn of_advice(&self, advice: usize) -> u64 {
        self.calls.get(advice).map_or(0, |r| r[0] + r[1])
    }
}
