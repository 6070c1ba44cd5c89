//! iomon: page cache, fadvise, read latency and reclaim, counted in the
//! kernel with eBPF and drained without loss.
//!
//! The modules follow the data flow:
//! [`probes`] (load and attach, per [`family`]) → [`drain`] → [`sample`] →
//! [`totals`] / [`store`] / [`control`] (wire: [`proto`]) / [`http`]
//! (text: [`exposition`]), all driven by the [`event_loop`]; [`config`] and
//! [`logging`] at the edges.

pub mod config;
pub mod control;
pub mod drain;
pub mod event_loop;
pub mod exposition;
pub mod family;
pub mod http;
pub mod logging;
pub mod probes;
pub mod proto;
pub mod sample;
pub mod store;
pub mod totals;

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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
