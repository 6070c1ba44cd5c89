//! Read syscalls: what is derived (declaration: `bpf/families/reads.toml`).

use super::{Cell, Column, Family, Section};
use crate::abi::reads::proc;
use crate::abi::READS;

pub static FAMILY: Family = Family {
    schema: &READS,
    rows: |_| Vec::new(),
    derived: &[],
    metrics: |_| Vec::new(),
    proc_metrics: |_, _| {},
    tick,
    columns: &[
        Column {
            header: "READS",
            name: "reads",
            value: |v| Cell::Count(v.and_then(|v| v.get(proc::CALLS).copied()).unwrap_or(0)),
        },
        Column {
            header: "BYTES",
            name: "read_bytes",
            value: |v| Cell::Bytes(v.and_then(|v| v.get(proc::BYTES).copied()).unwrap_or(0)),
        },
    ],
};

fn tick(s: &Section, secs: f64) -> String {
    let total = |name: &str| s.total(&READS, name).unwrap_or(0) as f64;
    format!(
        "reads {:.0}/s {:.1} MiB/s",
        total("calls") / secs,
        total("bytes") / secs / 1048576.0
    )
}
