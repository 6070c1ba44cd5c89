//! iomon: page cache, fadvise, read latency and reclaim, counted in the
//! kernel with eBPF and drained without loss.
//!
//! The modules follow the data flow:
//! [`probes`] (load/attach, per [`family`]) → [`drain`] → [`sample`] →
//! [`totals`] / store / control / http.

pub mod drain;
pub mod family;
pub mod probes;
pub mod sample;

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
