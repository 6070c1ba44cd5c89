//! Families' rows: their numbers per key (a block device), in a bounded
//! hash per family that programs only add to (cumulative, like the
//! host-wide arrays). Each tick reads every row and subtracts the previous
//! read; a row idle for [`IDLE_DELETE`] is deleted from the kernel map, so
//! keys that are gone (a device removed) free their slot: programs
//! re-create a row from zero at the key's next event, and its first read
//! counts from there.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapHandle};

use crate::abi::Schema;
use crate::family::Section;
use crate::hist;

/// A row unchanged this long is deleted from the kernel map (only
/// increments landing between its last read and the delete, on a key idle
/// for that long, can be lost).
pub const IDLE_DELETE: Duration = Duration::from_secs(3600);

/// One family's rows as read: (key, cumulative values).
pub type Read = Vec<(u32, Vec<u64>)>;

struct Prev {
    values: Vec<u64>,
    name: String,
    changed: Instant,
}

/// The previous read of every family's rows, and their names.
#[derive(Default)]
pub struct Rows {
    prev: HashMap<(&'static str, u32), Prev>,
}

/// Reads every row of one family's map (at most its bound).
pub fn read(schema: &Schema, map: &MapHandle) -> Read {
    let Some(rows) = &schema.rows else {
        return Vec::new();
    };
    let len = row_len(schema);
    let entries = super::maps::hash_entries(map, 4, len * 8, rows.max).unwrap_or_else(|| {
        // No batch lookups on this kernel: key by key.
        map.keys()
            .take(rows.max as usize * 2)
            .filter_map(|k| {
                let v = map.lookup(&k, libbpf_rs::MapFlags::ANY).ok()??;
                Some((k, v))
            })
            .collect()
    });
    entries
        .into_iter()
        .filter_map(|(k, v)| {
            let key = u32::from_ne_bytes(k.get(..4)?.try_into().ok()?);
            let values = v
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
                .collect::<Vec<u64>>();
            (values.len() == len).then_some((key, values))
        })
        .collect()
}

/// A key's name, by the kind of key its family declared: a `dev_t` (the
/// kernel's encoding: major << 20 | minor) is the block device's name from
/// `/sys/dev/block/MAJ:MIN/uevent`, a partition's its disk's (requests
/// are the disk's: a partition's bios count with them), else `MAJ:MIN`.
pub fn name(kind: &str, key: u32) -> String {
    match kind {
        "dev_t" => {
            let (major, minor) = (key >> 20, key & 0xf_ffff);
            let dir = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
            let disk = if dir.join("partition").exists() {
                dir.join("..")
            } else {
                dir
            };
            std::fs::read_to_string(disk.join("uevent"))
                .ok()
                .and_then(|u| {
                    u.lines()
                        .find_map(|l| l.strip_prefix("DEVNAME="))
                        .map(str::to_string)
                })
                .unwrap_or_else(|| format!("{major}:{minor}"))
        }
        _ => key.to_string(),
    }
}

/// Elements of a row: the family's counters, then each histogram's buckets.
pub fn row_len(schema: &Schema) -> usize {
    schema.ncounters + schema.hists.len() * hist::BUCKETS
}

impl Rows {
    /// The interval's sections by key name, from this read and the last;
    /// rows with nothing new are left out. `name` names a new key;
    /// `unmeasured` are the family's histograms this kernel cannot measure
    /// (left empty: absent). Idle rows are deleted from `map`.
    pub fn sections(
        &mut self,
        schema: &'static Schema,
        read: Read,
        map: Option<&MapHandle>,
        name: impl Fn(u32) -> String,
        unmeasured: &[(&'static str, usize)],
    ) -> BTreeMap<String, Section> {
        let now = Instant::now();
        let mut out = BTreeMap::new();
        let nc = schema.ncounters;
        for (key, values) in read {
            let prev = self.prev.entry((schema.name, key)).or_insert_with(|| Prev {
                values: vec![0; values.len()],
                name: name(key),
                changed: now,
            });
            // A row deleted and re-created starts again from zero.
            let restarted = values.iter().zip(&prev.values).any(|(v, p)| v < p);
            let base: &[u64] = if restarted { &[] } else { &prev.values };
            let delta: Vec<u64> = values
                .iter()
                .enumerate()
                .map(|(i, v)| v - base.get(i).copied().unwrap_or(0))
                .collect();
            if delta.iter().any(|d| *d > 0) {
                prev.changed = now;
                let hists = (0..schema.hists.len())
                    .map(|h| {
                        if unmeasured.contains(&(schema.name, h)) {
                            return Vec::new();
                        }
                        delta[nc + h * hist::BUCKETS..nc + (h + 1) * hist::BUCKETS].to_vec()
                    })
                    .collect();
                let s = Section {
                    counters: delta[..nc].to_vec(),
                    hists,
                };
                out.entry(prev.name.clone())
                    .and_modify(|o: &mut Section| o.merge(&s))
                    .or_insert(s);
            }
            prev.values = values;
        }
        if let Some(map) = map {
            self.prev.retain(|(fam, key), p| {
                if *fam != schema.name || now.duration_since(p.changed) < IDLE_DELETE {
                    return true;
                }
                // Gone from the kernel's map, or failing to: either way a
                // later read starts it again from what is there.
                let _ = map.delete(&key.to_ne_bytes());
                false
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> &'static Schema {
        crate::abi::SCHEMAS
            .iter()
            .copied()
            .find(|s| s.rows.is_some())
            .expect("a family with rows")
    }

    #[test]
    fn a_dev_t_is_named_as_sys_names_it() {
        // No device has the last major: named by number. A block device
        // the host has, by name.
        assert_eq!(name("dev_t", 4095 << 20 | 7), "4095:7");
        if let Some(e) = std::fs::read_dir("/sys/block")
            .ok()
            .and_then(|mut d| d.next())
        {
            let dev = std::fs::read_to_string(e.unwrap().path().join("dev")).unwrap();
            let (ma, mi) = dev.trim().split_once(':').unwrap();
            let key = ma.parse::<u32>().unwrap() << 20 | mi.parse::<u32>().unwrap();
            assert!(!name("dev_t", key).contains(':'), "{dev}");
        }
    }

    #[test]
    fn deltas_per_key_named_once_and_restarts_counted_from_zero() {
        let s = schema();
        let len = row_len(s);
        let mut rows = Rows::default();
        let row = |c0: u64, b: u64| {
            let mut v = vec![0; len];
            v[0] = c0;
            v[s.ncounters + 3] = b;
            v
        };
        let name = |k: u32| format!("dev{k}");
        let first = rows.sections(s, vec![(7, row(5, 2)), (8, row(0, 0))], None, name, &[]);
        assert_eq!(first.len(), 1, "an idle row is left out: {first:?}");
        assert_eq!(first["dev7"].counters[0], 5);
        assert_eq!(first["dev7"].hists[0][3], 2);
        let second = rows.sections(s, vec![(7, row(9, 2))], None, name, &[]);
        assert_eq!(second["dev7"].counters[0], 4);
        assert_eq!(second["dev7"].hists[0][3], 0);
        // Deleted and re-created by the programs: counted from zero.
        let third = rows.sections(s, vec![(7, row(3, 1))], None, name, &[(s.name, 0)]);
        assert_eq!(third["dev7"].counters[0], 3);
        assert!(third["dev7"].hists[0].is_empty(), "unmeasured: absent");
    }
}
