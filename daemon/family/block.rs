//! Block I/O: what is derived (declaration: `bpf/families/block.toml`).
//!
//! Requests, bytes, errors and latency are the devices' (counted where a
//! request completes, in no task); what a process or target did is the
//! I/O it submitted, counted where its bios reach a request-based device.

use super::{Cell, Column, Family, Section};
use crate::abi::block::proc;
use crate::abi::BLOCK;

pub static FAMILY: Family = Family {
    schema: &BLOCK,
    rows: |_| Vec::new(),
    derived: &[],
    metrics: |_| Vec::new(),
    proc_metrics: |_, _| {},
    tick,
    columns: &[
        Column {
            header: "DISK-RD",
            name: "disk_read_bytes",
            value: |v| {
                Cell::Bytes(
                    v.and_then(|v| v.get(proc::READ_BYTES).copied())
                        .unwrap_or(0),
                )
            },
        },
        Column {
            header: "DISK-WR",
            name: "disk_write_bytes",
            value: |v| {
                Cell::Bytes(
                    v.and_then(|v| v.get(proc::WRITE_BYTES).copied())
                        .unwrap_or(0),
                )
            },
        },
    ],
};

fn tick(s: &Section, secs: f64) -> String {
    let total = |name: &str| s.total(&BLOCK, name).unwrap_or(0) as f64;
    format!(
        "block {:.0} req/s {:.1} MiB/s",
        total("requests") / secs,
        total("bytes") / secs / 1048576.0
    )
}
