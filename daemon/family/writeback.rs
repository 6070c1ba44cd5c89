//! Writeback: what is derived (declaration: `bpf/families/writeback.toml`).
//!
//! Pages written by `fsync`/`fdatasync`/`O_SYNC` are written by the
//! syncing task itself and appear in no writeback event: `written` counts
//! the flusher's (and `sync(2)`'s) writeback only.

use super::{Cell, Column, Family, Section};
use crate::abi::writeback::{proc, DIRTIED, THROTTLES, WRITTEN};
use crate::abi::WRITEBACK;

pub static FAMILY: Family = Family {
    schema: &WRITEBACK,
    rows: |_| Vec::new(),
    derived: &[],
    metrics: |_| Vec::new(),
    proc_metrics: |_, _| {},
    tick,
    columns: &[Column {
        header: "DIRTIED",
        name: "pages_dirtied",
        value: |v| Cell::Count(v.and_then(|v| v.get(proc::DIRTIED).copied()).unwrap_or(0)),
    }],
};

fn tick(s: &Section, _secs: f64) -> String {
    format!(
        "writeback dirtied {} written {} throttled {}",
        s.get(DIRTIED).unwrap_or(0),
        s.get(WRITTEN).unwrap_or(0),
        s.get(THROTTLES).unwrap_or(0)
    )
}
