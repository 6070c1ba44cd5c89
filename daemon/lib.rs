//! iomon: the page cache and the disk I/O under it, counted in the kernel
//! with eBPF by probe families ([`family::ALL`]) and drained without loss.
//!
//! The modules, in the order of the data flow (each imports only modules
//! above it; `tests/modules.rs` holds the crate to that):
//!
//! - leaves: [`units`] (durations, sizes, wall-clock time), [`hist`]
//!   (histogram buckets), [`abi`] (what the BPF side and the daemon share,
//!   generated from the family declarations), [`promtext`] (the Prometheus
//!   text writer);
//! - [`family`]: each probe family, the unit of extension;
//! - [`banyandb`]: BanyanDB's on-disk layout, roots and memory cgroup, and
//!   its view of the targets' files;
//! - [`sample`]: one interval of every family;
//! - [`probes`]: what the kernel has, routes, loading and attaching;
//! - [`drain`]: the kernel's maps into a Sample, every tick;
//! - [`file_paths`]: the paths of the targets' files (the kernel knows
//!   device and inode);
//! - [`totals`] (since start) and [`store`] (history);
//! - [`export`]: the history written into a BanyanDB cluster, from a
//!   persisted cursor, on a thread of its own;
//! - [`report`]: "is the page cache working for BanyanDB?" over a window
//!   of the history;
//! - [`proto`] (the control socket's wire, shared with iomonctl),
//!   [`exposition`] (Prometheus text), [`control`] (the socket server) and
//!   [`http`] (hyper on the mio loop);
//! - at the edge: [`config`], [`logging`], and the [`event_loop`] that
//!   runs it all.

pub mod abi;
pub mod banyandb;
pub mod config;
pub mod control;
pub mod drain;
pub mod event_loop;
pub mod export;
pub mod exposition;
pub mod family;
pub mod file_paths;
pub mod hist;
pub mod http;
pub mod logging;
pub mod probes;
pub mod promtext;
pub mod proto;
pub mod report;
pub mod sample;
pub mod store;
pub mod totals;
pub mod units;

pub use units::now_ms;

/// An error and its sources on one line: "what failed: why: why".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
