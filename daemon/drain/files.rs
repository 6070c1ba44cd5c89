//! Targets' per-file numbers: two maps flipped and emptied every tick like
//! the per-process ones (an increment lands either in the map taken now or
//! in the one taken next tick), and the set of the targets' files, whose
//! evictions are theirs, kept to the files touched in the last hour.

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::sample::{file, FileSample};

/// A file no target read or advised on for this long leaves the set.
pub const FORGET_AFTER_NS: u64 = 3600 * 1_000_000_000;

/// `struct iomon_file_key`: ino (u64), dev (u32), target index (u32).
fn decode_key(k: &[u8]) -> Option<(u64, u32, usize)> {
    let ino = u64::from_ne_bytes(k.get(0..8)?.try_into().ok()?);
    let dev = u32::from_ne_bytes(k.get(8..12)?.try_into().ok()?);
    let target = u32::from_ne_bytes(k.get(12..16)?.try_into().ok()?);
    Some((ino, dev, target as usize))
}

/// `struct iomon_file`: `file::NR` u64 page counts.
fn decode_value(v: &[u8]) -> Option<Vec<u64>> {
    (0..file::NR)
        .map(|i| {
            v.get(8 * i..8 * i + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes)
        })
        .collect()
}

/// Takes every entry out of a per-file map no program writes to any more;
/// `names`: target names by index. An entry of a target index without a
/// name (cannot happen: targets change only between intervals) is
/// skipped. On a failure, what was taken so far and the error: the rest
/// stays in the map.
pub fn take(
    map: &MapHandle,
    names: &[Option<String>],
) -> (Vec<FileSample>, Option<libbpf_rs::Error>) {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    let mut out = Vec::with_capacity(keys.len());
    for k in &keys {
        let v = match map.lookup(k, MapFlags::ANY) {
            Ok(v) => v,
            Err(e) => return (out, Some(e)),
        };
        if let Err(e) = map.delete(k) {
            return (out, Some(e));
        }
        let (Some((ino, dev, target)), Some(pages)) =
            (decode_key(k), v.as_deref().and_then(decode_value))
        else {
            continue;
        };
        let Some(Some(name)) = names.get(target) else {
            continue;
        };
        out.push(FileSample {
            target: name.clone(),
            dev,
            ino,
            path: None,
            pages,
            kind: None,
        });
    }
    (out, None)
}

/// Removes files no target touched since `before_ns` (CLOCK_MONOTONIC,
/// as bpf_ktime_get_ns) from the set; how many.
pub fn prune_set(set: &MapHandle, before_ns: u64) -> usize {
    let keys: Vec<Vec<u8>> = set.keys().collect();
    let mut removed = 0;
    for k in keys {
        let Ok(Some(v)) = set.lookup(&k, MapFlags::ANY) else {
            continue;
        };
        // struct file_seen: targets (u32), pad, last_ns (u64).
        let last = v
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes);
        if last < before_ns && set.delete(&k).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// `struct iomon_evicted`: when_ns is its first u64.
fn evicted_when(v: &[u8]) -> u64 {
    v.get(0..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// Removes the blocks whose last eviction is older than `before_ns`
/// (CLOCK_MONOTONIC) from the map of evicted blocks: a refault after the
/// window is none. Returns (blocks left, blocks removed). Batch lookups
/// where the kernel has them, else key by key.
pub fn expire_evicted(map: &MapHandle, before_ns: u64) -> (u64, u64) {
    let (mut left, mut removed) = (0, 0);
    let mut stale: Vec<Vec<u8>> = Vec::new();
    let (ks, vs) = (map.key_size() as usize, map.value_size() as usize);
    match super::maps::hash_entries(map, ks, vs, map.max_entries()) {
        Some(entries) => {
            for (k, v) in entries {
                if evicted_when(&v) < before_ns {
                    stale.push(k);
                } else {
                    left += 1;
                }
            }
        }
        None => {
            for k in map.keys() {
                match map.lookup(&k, MapFlags::ANY) {
                    Ok(Some(v)) if evicted_when(&v) < before_ns => stale.push(k),
                    Ok(Some(_)) => left += 1,
                    _ => {}
                }
            }
        }
    }
    for k in stale {
        if map.delete(&k).is_ok() {
            removed += 1;
        }
    }
    (left, removed)
}

/// CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_decode_as_the_kernel_lays_them_out() {
        let mut k = 77u64.to_ne_bytes().to_vec();
        k.extend((8u32 << 20 | 1).to_ne_bytes());
        k.extend(2u32.to_ne_bytes());
        assert_eq!(decode_key(&k), Some((77, 8 << 20 | 1, 2)));
        assert_eq!(decode_key(&k[..15]), None);
        let v: Vec<u8> = (1..=file::NR as u64).flat_map(u64::to_ne_bytes).collect();
        assert_eq!(decode_value(&v), Some((1..=file::NR as u64).collect()));
        assert_eq!(decode_value(&v[..8 * file::NR - 1]), None);
    }
}
