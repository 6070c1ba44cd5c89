//! `posix_fadvise` calls by advice value and result: what is derived
//! (declaration: `bpf/families/fadvise.toml`).

use super::{Cell, Column, Derived, Family, ProcRows, Rows, Section, Shown, PER_NAME};
use crate::abi::fadvise::{advice, proc, result, CALLS, DONTNEED_COVERED, DONTNEED_DROPPED};
use crate::abi::FADVISE;
use crate::promtext::{Kind, Out};

pub static FAMILY: Family = Family {
    schema: &FADVISE,
    rows,
    derived: &[Derived {
        name: "dontneed_dropped_ratio",
        value: dropped_ratio,
        ratio: true,
    }],
    metrics: |_| Vec::new(),
    proc_metrics,
    tick,
    columns: &[
        Column {
            header: "FADVISE",
            name: "fadvise",
            value: |v| Cell::Count(v.map_or(0, |v| (0..advice::N).map(|a| of_advice(v, a)).sum())),
        },
        Column {
            header: "DONTNEED",
            name: "dontneed_ok",
            value: |v| {
                Cell::Count(
                    v.and_then(|v| {
                        v.get(at(proc::CALLS, advice::DONTNEED, result::OK))
                            .copied()
                    })
                    .unwrap_or(0),
                )
            },
        },
        Column {
            header: "DROPPED",
            name: "dontneed_dropped_pages",
            value: |v| {
                Cell::Count(
                    v.and_then(|v| v.get(proc::DONTNEED_DROPPED).copied())
                        .unwrap_or(0),
                )
            },
        },
    ],
};

/// Element of `calls[advice][result]` in a vector whose `calls` start at
/// `base`.
fn at(base: usize, a: usize, r: usize) -> usize {
    base + a * result::N + r
}

fn of_advice(v: &[u64], a: usize) -> u64 {
    (0..result::N)
        .map(|r| v.get(at(CALLS, a, r)).copied().unwrap_or(0))
        .sum()
}

/// Calls with one advice (ok and failed); `None` if absent.
pub fn calls_of(s: &Section, a: usize) -> Option<u64> {
    s.sum(&[at(CALLS, a, result::OK), at(CALLS, a, result::ERROR)])
}

fn rows(s: &Section) -> Rows {
    let names = FADVISE.counters[0].dims[0].values;
    let mut rows: Rows = names
        .iter()
        .enumerate()
        .map(|(a, name)| (name.to_string(), Shown::Count(calls_of(s, a))))
        .collect();
    let failed: Vec<usize> = (0..advice::N)
        .map(|a| at(CALLS, a, result::ERROR))
        .collect();
    rows.push(("failed".into(), Shown::Count(s.sum(&failed))));
    rows.push((
        "dontneed dropped share".into(),
        Shown::Ratio(dropped_ratio(s)),
    ));
    rows
}

/// Per process name and advice (ok and failed together); names that never
/// used an advice have no series for it.
fn proc_metrics(comms: &ProcRows, o: &mut Out) {
    const NAME: &str = "iomon_process_fadvise_calls";
    o.family(
        NAME,
        Kind::Counter,
        &format!("posix_fadvise calls by advice. {PER_NAME}"),
    );
    let names = FADVISE.proc[0].dims[0].values;
    for (comm, v) in comms {
        let Some(v) = v else { continue };
        for (a, name) in names.iter().enumerate() {
            let n = of_advice(v, a);
            if n > 0 {
                o.counter(NAME, &[("comm", comm), ("advice", name)], n);
            }
        }
    }
}

/// The share of the pages DONTNEED calls covered that they dropped;
/// `None` when they covered none (or the counters are older).
pub fn dropped_ratio(s: &Section) -> Option<f64> {
    let covered = s.get(DONTNEED_COVERED).filter(|c| *c > 0)?;
    let dropped = s.get(DONTNEED_DROPPED)?;
    Some((dropped as f64 / covered as f64).min(1.0))
}

fn tick(s: &Section, secs: f64) -> String {
    let total: u64 = (0..advice::N).filter_map(|a| calls_of(s, a)).sum();
    format!(
        "fadvise {:.0}/s (dontneed {}, dropped {}/{} pages)",
        total as f64 / secs,
        calls_of(s, advice::DONTNEED).unwrap_or(0),
        s.get(DONTNEED_DROPPED).unwrap_or(0),
        s.get(DONTNEED_COVERED).unwrap_or(0)
    )
}
