//! `posix_fadvise` calls by advice value and result.

use serde::{Deserialize, Serialize};

use super::{Deltas, Family, FamilyId, Program};
use crate::probes::counter as c;

pub const FAMILY: Family = Family {
    id: FamilyId::Fadvise,
    default_on: true,
    about: "posix_fadvise calls by advice and result",
    programs: &[Program {
        name: "fadvise_exit",
        event: "tracepoint:syscalls:sys_exit_fadvise64",
    }],
};

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
