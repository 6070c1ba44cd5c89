//! Reading the kernel's maps: per-CPU arrays summed over CPUs, and the
//! per-process LRU hash taken (or copied) in batches. Decoding of raw bytes
//! is pure and tested here.

use std::os::fd::{AsFd, AsRawFd};

use crate::abi;
use crate::probes::{PROC_COMM_LEN, PROC_VALUES_AT, PROC_VALUE_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("failed to read BPF map {map}")]
    Read {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("BPF map {map} returned {got} bytes where {want} were expected")]
    Layout {
        map: &'static str,
        got: usize,
        want: usize,
    },
}

/// One `struct iomon_proc` as the kernel wrote it: the process, its name,
/// and every family's per-process fields (`abi::PROC_NR` of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawProc {
    pub tgid: u32,
    pub comm: String,
    pub targets: u32,
    pub v: Vec<u64>,
}

/// Sums each key's per-CPU values. `buf` holds `nkeys` entries of `ncpus`
/// 8-byte slots (the kernel's per-CPU layout for u64 values).
pub fn sum_percpu(buf: &[u8], nkeys: usize, ncpus: usize) -> Result<Vec<u64>, (usize, usize)> {
    let want = nkeys * ncpus * 8;
    if buf.len() < want {
        return Err((buf.len(), want));
    }
    Ok(buf[..want]
        .chunks_exact(ncpus * 8)
        .map(|key| {
            key.chunks_exact(8)
                .map(|v| u64::from_ne_bytes(v.try_into().expect("chunk of 8")))
                .fold(0u64, u64::wrapping_add)
        })
        .collect())
}

/// `cur - prev` per slot. The kernel's counters only grow; a slot that went
/// backwards (a map that was recreated) yields its current value.
pub fn deltas(cur: &[u64], prev: &[u64]) -> Vec<u64> {
    cur.iter()
        .enumerate()
        .map(|(i, &c)| match prev.get(i) {
            Some(&p) if p <= c => c - p,
            _ => c,
        })
        .collect()
}

/// Decodes one `struct iomon_proc` (bytes as the kernel wrote them).
pub fn decode_proc(tgid: u32, bytes: &[u8]) -> Option<RawProc> {
    if bytes.len() < PROC_VALUE_SIZE {
        return None;
    }
    let comm_bytes: Vec<u8> = bytes[..PROC_COMM_LEN]
        .iter()
        .copied()
        .take_while(|&c| c != 0)
        .collect();
    let targets = u32::from_ne_bytes(
        bytes[PROC_COMM_LEN..PROC_COMM_LEN + 4]
            .try_into()
            .expect("4 bytes"),
    );
    let v = bytes[PROC_VALUES_AT..PROC_VALUES_AT + 8 * abi::PROC_NR]
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("chunk of 8")))
        .collect();
    Some(RawProc {
        tgid,
        comm: String::from_utf8_lossy(&comm_bytes).into_owned(),
        targets,
        v,
    })
}

fn os_err(ret: i32) -> std::io::Error {
    if ret < 0 {
        std::io::Error::from_raw_os_error(-ret)
    } else {
        std::io::Error::last_os_error()
    }
}

/// Whether the kernel has batch lookups for a kind of map (per-CPU arrays
/// have them from 5.13 or so, hashes from 5.6): learned at the first read,
/// then one way or the other for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batch {
    #[default]
    Unknown,
    Yes,
    No,
}

/// Errors that mean "no batch operations for this map type here".
fn batch_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(524 /* ENOTSUPP */)
    )
}

/// Keys `start .. start + nkeys` of a per-CPU array, each summed over the
/// CPUs: in one batch where the kernel has batch lookups, else key by key
/// (`batch` remembers which).
pub fn read_percpu_array_range(
    map: &libbpf_rs::MapHandle,
    name: &'static str,
    start: usize,
    nkeys: usize,
    ncpus: usize,
    batch: &mut Batch,
) -> Result<Vec<u64>, MapError> {
    if *batch != Batch::No {
        match read_percpu_array_batch(map, name, start, nkeys, ncpus) {
            Err(MapError::Read { source, .. })
                if *batch == Batch::Unknown && batch_unsupported(&source) =>
            {
                log::info!("BPF map {name}: no batch lookups on this kernel; reading key by key");
                *batch = Batch::No;
            }
            r => {
                *batch = Batch::Yes;
                return r;
            }
        }
    }
    let mut vals = vec![0u8; ncpus * 8];
    let mut out = Vec::with_capacity(nkeys);
    for key in start as u32..(start + nkeys) as u32 {
        // SAFETY: vals holds one per-CPU value of the map (ncpus u64s).
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                map.as_fd().as_raw_fd(),
                (&key as *const u32).cast(),
                vals.as_mut_ptr().cast(),
            )
        };
        if ret != 0 {
            return Err(MapError::Read {
                map: name,
                source: os_err(ret),
            });
        }
        let sum = sum_percpu(&vals, 1, ncpus).map_err(|(got, want)| MapError::Layout {
            map: name,
            got,
            want,
        })?;
        out.push(sum[0]);
    }
    Ok(out)
}

fn read_percpu_array_batch(
    map: &libbpf_rs::MapHandle,
    name: &'static str,
    start: usize,
    nkeys: usize,
    ncpus: usize,
) -> Result<Vec<u64>, MapError> {
    let mut keys = vec![0u32; nkeys];
    let mut vals = vec![0u8; nkeys * ncpus * 8];
    let mut out_batch = 0u32;
    let mut count = nkeys as u32;
    // The batch starts after `in_batch` (the key before the first).
    let mut before = start.saturating_sub(1) as u32;
    let in_ptr: *mut std::ffi::c_void = if start == 0 {
        std::ptr::null_mut()
    } else {
        (&mut before as *mut u32).cast()
    };
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    // SAFETY: keys and vals hold room for `count` entries of the map's key
    // and per-CPU value sizes; the kernel writes at most that many.
    let ret = unsafe {
        libbpf_sys::bpf_map_lookup_batch(
            map.as_fd().as_raw_fd(),
            in_ptr,
            (&mut out_batch as *mut u32).cast(),
            keys.as_mut_ptr().cast(),
            vals.as_mut_ptr().cast(),
            &mut count,
            &opts,
        )
    };
    // An array batch that returns every key ends with ENOENT.
    if ret != 0 {
        let err = os_err(ret);
        if err.raw_os_error() != Some(libc::ENOENT) {
            return Err(MapError::Read {
                map: name,
                source: err,
            });
        }
    }
    if count as usize != nkeys {
        return Err(MapError::Layout {
            map: name,
            got: count as usize * ncpus * 8,
            want: nkeys * ncpus * 8,
        });
    }
    sum_percpu(&vals, nkeys, ncpus).map_err(|(got, want)| MapError::Layout {
        map: name,
        got,
        want,
    })
}

/// What one pass over a per-process map gave: every entry read before an
/// error (already taken from the kernel when deleting: they must be kept),
/// and the error that ended it early, if one did.
#[derive(Debug, Default)]
pub struct ProcRead {
    pub procs: Vec<RawProc>,
    pub error: Option<MapError>,
}

/// A fault to inject into the per-process read, for tests: the read fails
/// after this many batches, each of at most `batch` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault {
    pub batch: u32,
    pub fail_after: usize,
}

/// Takes (or, with `delete == false`, copies) every entry of a per-process
/// map: in batches where the kernel has them, else key by key (taking is
/// safe either way: the drain reads a map no program writes to any more).
pub fn read_procs(
    map: &libbpf_rs::MapHandle,
    capacity: u32,
    delete: bool,
    fault: Option<InjectedFault>,
    batch: &mut Batch,
) -> ProcRead {
    if *batch != Batch::No {
        let r = read_procs_batch(map, capacity, delete, fault);
        match &r.error {
            Some(MapError::Read { source, .. })
                if *batch == Batch::Unknown && r.procs.is_empty() && batch_unsupported(source) =>
            {
                log::info!("BPF map procs: no batch lookups on this kernel; reading key by key");
                *batch = Batch::No;
            }
            _ => {
                *batch = Batch::Yes;
                return r;
            }
        }
    }
    read_procs_by_key(map, capacity, delete, fault)
}

fn read_procs_by_key(
    map: &libbpf_rs::MapHandle,
    capacity: u32,
    delete: bool,
    fault: Option<InjectedFault>,
) -> ProcRead {
    let fd = map.as_fd().as_raw_fd();
    let mut out = ProcRead::default();
    // The keys first (bounded by the capacity), then each entry.
    let mut keys = Vec::new();
    let mut key = 0u32;
    let mut next = 0u32;
    let mut first = true;
    while keys.len() <= capacity as usize {
        let prev: *const std::ffi::c_void = if first {
            std::ptr::null()
        } else {
            (&key as *const u32).cast()
        };
        // SAFETY: key and next are u32, the map's key size.
        let ret =
            unsafe { libbpf_sys::bpf_map_get_next_key(fd, prev, (&mut next as *mut u32).cast()) };
        if ret != 0 {
            break;
        }
        keys.push(next);
        key = next;
        first = false;
    }
    let mut val = vec![0u8; PROC_VALUE_SIZE];
    for (i, k) in keys.into_iter().enumerate() {
        if fault.is_some_and(|f| i >= f.fail_after * f.batch.max(1) as usize) {
            out.error = Some(MapError::Read {
                map: "procs",
                source: std::io::Error::other("injected fault"),
            });
            return out;
        }
        // SAFETY: val holds one value of the map.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_elem(fd, (&k as *const u32).cast(), val.as_mut_ptr().cast())
        };
        if ret != 0 {
            continue; // gone since the key walk
        }
        if let Some(p) = decode_proc(k, &val) {
            out.procs.push(p);
        }
        if delete {
            // SAFETY: k is a key of the map.
            unsafe { libbpf_sys::bpf_map_delete_elem(fd, (&k as *const u32).cast()) };
        }
    }
    out
}

fn read_procs_batch(
    map: &libbpf_rs::MapHandle,
    capacity: u32,
    delete: bool,
    fault: Option<InjectedFault>,
) -> ProcRead {
    let mut r = ProcReader::new(capacity, delete, fault, capacity);
    let mut out = ProcRead::default();
    while !r.step(map, &mut out, usize::MAX) {}
    out
}

thread_local! {
    static PROC_BUFS: std::cell::RefCell<(Vec<u32>, Vec<u8>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// A walk over a per-process map in batches, resumable: the event loop
/// reads a bounded part per turn (the map is one no program writes to any
/// more, so the walk sees it as it was left).
#[derive(Debug, Clone)]
pub struct ProcReader {
    capacity: u32,
    delete: bool,
    fault: Option<InjectedFault>,
    batch: u32,
    first: bool,
    in_batch: u32,
    round: u32,
    done: bool,
}

impl ProcReader {
    /// `batch`: entries per call into the kernel (at most 4,096).
    pub fn new(capacity: u32, delete: bool, fault: Option<InjectedFault>, batch: u32) -> Self {
        ProcReader {
            capacity,
            delete,
            fault,
            batch: fault.map_or(batch.clamp(1, 4096), |f| f.batch.max(1)),
            first: true,
            in_batch: 0,
            round: 0,
            done: false,
        }
    }

    /// Reads batches into `out` until at least `at_least` entries were
    /// added or the walk ended; whether it ended (at its end, or on an
    /// error, which is in `out`).
    pub fn step(
        &mut self,
        map: &libbpf_rs::MapHandle,
        out: &mut ProcRead,
        at_least: usize,
    ) -> bool {
        if self.done {
            return true;
        }
        // The buffers are kept for the next tick: fresh ones, a megabyte at
        // the default capacity, cost a page fault per page every tick.
        PROC_BUFS.with_borrow_mut(|(keys, vals)| {
            keys.resize(self.batch as usize, 0);
            vals.resize(self.batch as usize * PROC_VALUE_SIZE, 0);
            let start = out.procs.len();
            while !self.done && out.procs.len() - start < at_least {
                self.done = self.round_into(map, out, keys, vals);
            }
        });
        self.done
    }

    /// One call into the kernel; whether the walk ended.
    fn round_into(
        &mut self,
        map: &libbpf_rs::MapHandle,
        out: &mut ProcRead,
        keys: &mut [u32],
        vals: &mut [u8],
    ) -> bool {
        // Bounded: each call returns at least one entry or ends the walk,
        // and the map never holds more than `capacity`; the cap is a safety
        // net against a map refilled as fast as it is drained.
        if self.round >= (self.capacity / self.batch + 2) * 4 {
            return true;
        }
        if self
            .fault
            .is_some_and(|f| self.round as usize >= f.fail_after)
        {
            out.error = Some(MapError::Read {
                map: "procs",
                source: std::io::Error::other("injected fault"),
            });
            return true;
        }
        self.round += 1;
        let opts = libbpf_sys::bpf_map_batch_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
            ..Default::default()
        };
        let mut count = self.batch;
        let mut out_batch = 0u32;
        let in_ptr = if self.first {
            std::ptr::null_mut()
        } else {
            (&mut self.in_batch as *mut u32).cast()
        };
        // SAFETY: buffers hold `batch` keys and values of the map's sizes.
        let ret = unsafe {
            let f = if self.delete {
                libbpf_sys::bpf_map_lookup_and_delete_batch
            } else {
                libbpf_sys::bpf_map_lookup_batch
            };
            f(
                map.as_fd().as_raw_fd(),
                in_ptr,
                (&mut out_batch as *mut u32).cast(),
                keys.as_mut_ptr().cast(),
                vals.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        // Entries returned with an error are still the caller's (deleted
        // from the kernel already).
        for i in 0..(count.min(self.batch) as usize) {
            if let Some(p) = decode_proc(
                keys[i],
                &vals[i * PROC_VALUE_SIZE..(i + 1) * PROC_VALUE_SIZE],
            ) {
                out.procs.push(p);
            }
        }
        if ret != 0 {
            let err = os_err(ret);
            if err.raw_os_error() != Some(libc::ENOENT) {
                out.error = Some(MapError::Read {
                    map: "procs",
                    source: err,
                });
            }
            return true;
        }
        self.in_batch = out_batch;
        self.first = false;
        false
    }
}

/// Every entry of a hash map (keys of `key_size` bytes, values of
/// `value_size`), copied in batches; `None` where the kernel has no batch
/// lookups for it (the caller walks it key by key).
pub fn hash_entries(
    map: &libbpf_rs::MapHandle,
    key_size: usize,
    value_size: usize,
    capacity: u32,
) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let batch = capacity.clamp(1, 1024);
    let mut keys = vec![0u8; batch as usize * key_size];
    let mut vals = vec![0u8; batch as usize * value_size];
    let mut in_batch = vec![0u8; key_size.max(8)];
    let mut out_batch = vec![0u8; key_size.max(8)];
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut first = true;
    // Bounded: a walk of `capacity` entries in batches, with room to spare.
    for _ in 0..(capacity / batch + 2) * 2 {
        let mut count = batch;
        // SAFETY: buffers hold `batch` keys and values of the sizes given,
        // and the batch tokens are at least a key (hash maps' token).
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_batch(
                map.as_fd().as_raw_fd(),
                if first {
                    std::ptr::null_mut()
                } else {
                    in_batch.as_mut_ptr().cast()
                },
                out_batch.as_mut_ptr().cast(),
                keys.as_mut_ptr().cast(),
                vals.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        for i in 0..count.min(batch) as usize {
            out.push((
                keys[i * key_size..(i + 1) * key_size].to_vec(),
                vals[i * value_size..(i + 1) * value_size].to_vec(),
            ));
        }
        if ret != 0 {
            let err = os_err(ret);
            return match err.raw_os_error() {
                Some(libc::ENOENT) => Some(out),
                _ if first && batch_unsupported(&err) => None,
                // A failure half-way: what was read is returned.
                _ => Some(out),
            };
        }
        in_batch.copy_from_slice(&out_batch);
        first = false;
    }
    Some(out)
}

/// Counts the entries of a map by walking its keys, one `bpf()` call each
/// (for the entries-vs-capacity gauges: off the event loop, see
/// [`super::upkeep`]).
pub fn count_entries(map: &libbpf_rs::MapHandle) -> u64 {
    use libbpf_rs::MapCore;
    map.keys().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percpu_sums_per_key() {
        // 2 keys x 3 CPUs
        let vals: [u64; 6] = [1, 2, 3, 10, 20, 30];
        let buf: Vec<u8> = vals.iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(sum_percpu(&buf, 2, 3).unwrap(), vec![6, 60]);
        assert_eq!(sum_percpu(&buf[..40], 2, 3), Err((40, 48)));
    }

    #[test]
    fn deltas_never_negative() {
        assert_eq!(deltas(&[5, 7, 3], &[2, 7, 9]), vec![3, 0, 3]);
        assert_eq!(deltas(&[5, 1], &[]), vec![5, 1]);
    }

    #[test]
    fn decode_proc_reads_layout_and_comm() {
        let mut bytes = vec![0u8; PROC_VALUE_SIZE];
        bytes[..7].copy_from_slice(b"banyand");
        bytes[PROC_COMM_LEN..PROC_COMM_LEN + 4].copy_from_slice(&5u32.to_ne_bytes());
        let at = |i: usize| PROC_VALUES_AT + 8 * i;
        bytes[at(3)..at(3) + 8].copy_from_slice(&9u64.to_ne_bytes());
        let p = decode_proc(42, &bytes).unwrap();
        assert_eq!((p.tgid, p.comm.as_str(), p.targets), (42, "banyand", 5));
        assert_eq!(p.v.len(), abi::PROC_NR);
        assert_eq!(p.v[3], 9);
        assert!(
            decode_proc(1, &bytes[..10]).is_none(),
            "short buffer refused"
        );
    }
}
