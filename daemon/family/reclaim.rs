//! Memory reclaim: what is derived (declaration: `bpf/families/reclaim.toml`).

use super::{Family, Section};
use crate::abi::reclaim::{RECLAIMED, SCANNED, STALLS};
use crate::abi::RECLAIM;

pub static FAMILY: Family = Family {
    schema: &RECLAIM,
    rows: |_| Vec::new(),
    derived: &[],
    metrics: |_| Vec::new(),
    proc_metrics: |_, _| {},
    tick,
    // Reclaim is not attributed to processes.
    columns: &[],
};

fn both(s: &Section, base: usize) -> u64 {
    s.sum(&[base, base + 1]).unwrap_or(0)
}

fn tick(s: &Section, _secs: f64) -> String {
    format!(
        "reclaim scanned {} reclaimed {} stalls {}",
        both(s, SCANNED),
        both(s, RECLAIMED),
        both(s, STALLS)
    )
}
