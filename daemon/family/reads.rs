//! Read syscalls: calls, bytes and latency.

use serde::{Deserialize, Serialize};

use super::{add_slice, Deltas, Family, FamilyId, Program};
use crate::probes::{counter as c, hist as h};

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
};

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
