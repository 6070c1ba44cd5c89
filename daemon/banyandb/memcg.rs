//! The memory cgroup's own view beside iomon's, from files the kernel
//! keeps (no BPF): a BanyanDB process's cgroup (`memory.max`,
//! `memory.current`, `memory.stat`) and the host's (`/proc/vmstat`), and
//! the DONTNEED threshold BanyanDB derives from that limit
//! (banyand/protector/protector.go, `GetThreshold`). Injectable roots: the
//! tests read fixtures.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A cgroup's memory, read at the end of an interval; the workingset
/// counters as the interval's deltas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemcgSample {
    /// Its path under the cgroup v2 mount (`system.slice/banyandb.service`).
    pub cgroup: String,
    /// `memory.max`; `None`: `max` (no limit) or unreadable.
    pub max_bytes: Option<u64>,
    pub current_bytes: u64,
    /// `memory.stat`: file, active_file, inactive_file (bytes).
    pub file_bytes: u64,
    pub active_file_bytes: u64,
    pub inactive_file_bytes: u64,
    /// `memory.stat`: workingset_refault_file, workingset_activate_file
    /// (pages, over the interval).
    pub refault_file: u64,
    pub activate_file: u64,
    /// The DONTNEED threshold BanyanDB derives, and from what.
    pub threshold_bytes: u64,
    pub threshold_rule: String,
}

/// The host's file cache, from `/proc/vmstat` (pages; the workingset
/// counters over the interval).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMem {
    pub active_file: u64,
    pub inactive_file: u64,
    pub refault_file: u64,
    pub activate_file: u64,
}

impl MemcgSample {
    /// Adds a later interval: its counts added, its gauges kept.
    pub fn merge(&mut self, o: &MemcgSample) {
        let (r, a) = (self.refault_file, self.activate_file);
        *self = o.clone();
        self.refault_file = r.saturating_add(o.refault_file);
        self.activate_file = a.saturating_add(o.activate_file);
    }
}

impl HostMem {
    /// Adds a later interval: its counts added, its gauges kept.
    pub fn merge(&mut self, o: &HostMem) {
        let (r, a) = (self.refault_file, self.activate_file);
        *self = o.clone();
        self.refault_file = r.saturating_add(o.refault_file);
        self.activate_file = a.saturating_add(o.activate_file);
    }
}

/// Cgroups kept apart in a sum (the totals, a window): BanyanDB runs one
/// process per node, so more means cgroups came and went; past the bound a
/// new cgroup is left out of the sum (it stays in its own Samples).
pub const MAX_CGROUPS: usize = 16;

/// Adds a later interval's cgroups, cgroup by cgroup (at most
/// [`MAX_CGROUPS`]).
pub fn merge(into: &mut Vec<MemcgSample>, from: &[MemcgSample]) {
    for m in from {
        let full = into.len() >= MAX_CGROUPS;
        match into.iter_mut().find(|x| x.cgroup == m.cgroup) {
            Some(x) => x.merge(m),
            None if !full => into.push(m.clone()),
            None => {}
        }
    }
}

/// `key value` lines, as memory.stat and /proc/vmstat have them.
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(key))
            .then(|| w.next())
            .flatten()
            .and_then(|v| v.parse().ok())
    })
}

/// BanyanDB's DONTNEED threshold: 1 % of (limit x allowed-percent / 100),
/// or of (limit - allowed-bytes) when that is set; at least 10 MiB; 64 MiB
/// when the limit cannot be read. An unlimited cgroup (`max`, which it
/// reads as -1) gives the floor. With the rule, said.
pub fn threshold(
    limit: Option<Result<i64, ()>>,
    allowed_percent: u64,
    allowed_bytes: u64,
) -> (u64, String) {
    const FLOOR: i64 = 10 << 20;
    match limit {
        None | Some(Err(())) => (
            64 << 20,
            "64 MiB: the cgroup's memory limit cannot be read".into(),
        ),
        Some(Ok(l)) => {
            let (total, how) = if allowed_bytes > 0 {
                (
                    l.saturating_sub(allowed_bytes as i64),
                    format!("(memory.max - allowed-bytes {allowed_bytes})"),
                )
            } else {
                (
                    l.saturating_mul(allowed_percent as i64) / 100,
                    format!("(memory.max x allowed-percent {allowed_percent} %)"),
                )
            };
            let t = total / 100;
            if l < 0 {
                (
                    FLOOR as u64,
                    "10 MiB: the cgroup has no memory limit (max), the floor applies".into(),
                )
            } else if t < FLOOR {
                (
                    FLOOR as u64,
                    format!("10 MiB: 1 % of {how} is below the 10 MiB floor"),
                )
            } else {
                (t as u64, format!("1 % of {how}"))
            }
        }
    }
}

/// A process's memory cgroup: its path, and whether it is in a cgroup v1
/// memory hierarchy (a hybrid host) rather than the v2 one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memcg {
    pub path: String,
    pub v1: bool,
}

impl Memcg {
    /// As shown: the v2 path, or `memory:/path` for v1.
    pub fn name(&self) -> String {
        if self.v1 {
            format!("memory:/{}", self.path)
        } else {
            self.path.clone()
        }
    }
}

/// A process's memory cgroup, as BanyanDB finds its own
/// (pkg/cgroups/memory.go): the v1 `memory` controller's line where there
/// is one, else the v2 line (`0::/path`); the path without its leading
/// `/`.
pub fn cgroup_of(proc_root: &Path, pid: u32) -> Option<Memcg> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    let line = |controller: &str| {
        text.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, c, p) = (f.next()?, f.next()?, f.next()?);
            (c == controller).then(|| p.trim_start_matches('/').to_string())
        })
    };
    if let Some(path) = line("memory") {
        return Some(Memcg { path, v1: true });
    }
    line("").map(|path| Memcg { path, v1: false })
}

/// Where the cgroup v1 memory controller is mounted, if it is.
pub fn cgroup1_memory_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        let (fstype, _, options) = (r.next()?, r.next()?, r.next()?);
        (fstype == "cgroup" && options.split(',').any(|o| o == "memory"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// Reads cgroups' and the host's memory files; remembers the last
/// workingset counters to report deltas.
#[derive(Debug, Default)]
pub struct Reader {
    cgroup_root: Option<PathBuf>,
    v1_root: Option<PathBuf>,
    vmstat: PathBuf,
    last: std::collections::HashMap<String, (u64, u64)>,
}

impl Reader {
    /// `cgroup_root`: the v2 mount; `v1_root`: the v1 memory controller's.
    pub fn new(cgroup_root: Option<PathBuf>, v1_root: Option<PathBuf>, vmstat: PathBuf) -> Reader {
        Reader {
            cgroup_root,
            v1_root,
            vmstat,
            last: Default::default(),
        }
    }

    /// The interval's delta of a cumulative pair, remembered under `key`
    /// (the first read gives 0: no interval yet).
    fn delta(&mut self, key: &str, now: (u64, u64)) -> (u64, u64) {
        let prev = self.last.insert(key.to_string(), now);
        match prev {
            Some(p) => (now.0.saturating_sub(p.0), now.1.saturating_sub(p.1)),
            None => (0, 0),
        }
    }

    /// A cgroup's memory now, with the threshold a BanyanDB process in it
    /// derives from its flags; `None` where the cgroup is not there. A v1
    /// cgroup's files have v1 names (memory.limit_in_bytes, capped by
    /// memory.hierarchical_memory_limit as BanyanDB caps it;
    /// memory.usage_in_bytes; `cache` for `file`).
    pub fn cgroup(
        &mut self,
        cg: &Memcg,
        allowed_percent: u64,
        allowed_bytes: u64,
    ) -> Option<MemcgSample> {
        let root = if cg.v1 {
            &self.v1_root
        } else {
            &self.cgroup_root
        };
        let dir = root.as_ref()?.join(&cg.path);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        let stat = read("memory.stat")?;
        let (limit_file, current_file, file_key) = if cg.v1 {
            ("memory.limit_in_bytes", "memory.usage_in_bytes", "cache")
        } else {
            ("memory.max", "memory.current", "file")
        };
        let parse = |t: Option<String>| match t.as_deref().map(str::trim) {
            None => None,
            Some("max") => Some(Ok(-1)),
            Some(v) => Some(v.parse::<i64>().map_err(|_| ())),
        };
        let mut limit = parse(read(limit_file));
        if cg.v1 {
            if let (Some(Ok(l)), Some(Ok(h))) =
                (limit, parse(read("memory.hierarchical_memory_limit")))
            {
                limit = Some(Ok(l.min(h)));
            }
        }
        let (threshold_bytes, threshold_rule) = threshold(limit, allowed_percent, allowed_bytes);
        let v = |k: &str| stat_value(&stat, k).unwrap_or(0);
        let name = cg.name();
        let (refault_file, activate_file) = self.delta(
            &name,
            (v("workingset_refault_file"), v("workingset_activate_file")),
        );
        Some(MemcgSample {
            cgroup: name,
            max_bytes: match limit {
                // v1 says "no limit" with a number near 2^63.
                Some(Ok(l)) if (0..1 << 62).contains(&l) => Some(l as u64),
                _ => None,
            },
            current_bytes: read(current_file)
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
            file_bytes: v(file_key),
            active_file_bytes: v("active_file"),
            inactive_file_bytes: v("inactive_file"),
            refault_file,
            activate_file,
            threshold_bytes,
            threshold_rule,
        })
    }

    /// Forgets the counters of cgroups not among `live` (the last read of
    /// a cgroup that comes back gives 0, as a first read does).
    pub fn keep_only(&mut self, live: &[String]) {
        self.last
            .retain(|k, _| k == "/" || live.iter().any(|l| l == k));
    }

    /// The host's file cache now; `None` where /proc/vmstat is not there.
    pub fn host(&mut self) -> Option<HostMem> {
        let text = self.read_vmstat()?;
        Some(self.host_from(&text))
    }

    /// /proc/vmstat's text (`None` where it is not there), for
    /// [`Reader::host_from`] and anyone else reading it this tick.
    pub fn read_vmstat(&self) -> Option<String> {
        std::fs::read_to_string(&self.vmstat).ok()
    }

    /// The host's file cache from /proc/vmstat's `text`.
    pub fn host_from(&mut self, text: &str) -> HostMem {
        let v = |k: &str| stat_value(text, k).unwrap_or(0);
        let (refault_file, activate_file) = self.delta(
            "/",
            (v("workingset_refault_file"), v("workingset_activate_file")),
        );
        HostMem {
            active_file: v("nr_active_file"),
            inactive_file: v("nr_inactive_file"),
            refault_file,
            activate_file,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_follows_banyandb_s_rule() {
        let gib = 1i64 << 30;
        // 8 GiB x 75 % = 6 GiB; 1 % of it.
        let (t, why) = threshold(Some(Ok(8 * gib)), 75, 0);
        assert_eq!(t, (6 * gib / 100) as u64);
        assert!(why.contains("allowed-percent 75"), "{why}");
        // allowed-bytes wins over the percentage.
        let (t, _) = threshold(Some(Ok(8 * gib)), 75, 2 << 30);
        assert_eq!(t, (6 * gib / 100) as u64);
        // A small limit: the 10 MiB floor.
        assert_eq!(threshold(Some(Ok(512 << 20)), 75, 0).0, 10 << 20);
        // max (-1): the floor; unreadable: 64 MiB.
        let (t, why) = threshold(Some(Ok(-1)), 75, 0);
        assert_eq!(t, 10 << 20);
        assert!(why.contains("no memory limit"), "{why}");
        assert_eq!(threshold(None, 75, 0).0, 64 << 20);
        assert_eq!(threshold(Some(Err(())), 75, 0).0, 64 << 20);
    }

    #[test]
    fn a_cgroup_and_the_host_are_read_with_interval_deltas() {
        let d = tempfile::tempdir().unwrap();
        let cg = d.path().join("cg/banyand");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("memory.max"), "1073741824\n").unwrap();
        std::fs::write(cg.join("memory.current"), "500000000\n").unwrap();
        let stat = |r: u64| {
            format!("anon 1\nfile 400000000\nactive_file 300000000\ninactive_file 100000000\nworkingset_refault_file {r}\nworkingset_activate_file 7\n")
        };
        std::fs::write(cg.join("memory.stat"), stat(100)).unwrap();
        std::fs::write(d.path().join("vmstat"), "nr_active_file 5\nnr_inactive_file 6\nworkingset_refault_file 40\nworkingset_activate_file 2\n").unwrap();
        let mut r = Reader::new(Some(d.path().join("cg")), None, d.path().join("vmstat"));
        let cgv2 = |p: &str| Memcg {
            path: p.into(),
            v1: false,
        };
        let first = r.cgroup(&cgv2("banyand"), 75, 0).unwrap();
        assert_eq!(
            (first.max_bytes, first.file_bytes, first.refault_file),
            (Some(1 << 30), 400_000_000, 0)
        );
        assert_eq!(
            first.threshold_bytes,
            10 << 20,
            "1 % of 768 MiB is below the floor"
        );
        std::fs::write(cg.join("memory.stat"), stat(160)).unwrap();
        assert_eq!(r.cgroup(&cgv2("banyand"), 75, 0).unwrap().refault_file, 60);
        let h = r.host().unwrap();
        assert_eq!((h.active_file, h.inactive_file), (5, 6));
        assert!(r.cgroup(&cgv2("nope"), 75, 0).is_none());
        std::fs::write(cg.join("memory.max"), "max\n").unwrap();
        assert_eq!(r.cgroup(&cgv2("banyand"), 75, 0).unwrap().max_bytes, None);
        // v1: its own file names; an unlimited cgroup says so with a huge
        // number, which BanyanDB takes at its word.
        let v1 = d.path().join("v1/banyand");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(v1.join("memory.hierarchical_memory_limit"), "4294967296\n").unwrap();
        std::fs::write(v1.join("memory.usage_in_bytes"), "1000\n").unwrap();
        std::fs::write(v1.join("memory.stat"), "cache 4096\nactive_file 4096\n").unwrap();
        let mut r = Reader::new(None, Some(d.path().join("v1")), d.path().join("vmstat"));
        let m = r
            .cgroup(
                &Memcg {
                    path: "banyand".into(),
                    v1: true,
                },
                75,
                0,
            )
            .unwrap();
        assert_eq!(
            (m.cgroup.as_str(), m.max_bytes, m.file_bytes),
            ("memory:/banyand", Some(4 << 30), 4096)
        );
        assert_eq!(
            m.threshold_bytes,
            (3u64 << 30) / 100,
            "the hierarchical limit caps it"
        );
    }

    #[test]
    fn a_process_memory_cgroup_is_the_v1_controller_s_else_the_v2_line() {
        let d = tempfile::tempdir().unwrap();
        for (pid, text) in [
            (42, "0::/system.slice/banyandb.service\n"),
            (44, "4:memory:/process_api/x\n1:cpu:/\n0::/\n"),
        ] {
            std::fs::create_dir_all(d.path().join(pid.to_string())).unwrap();
            std::fs::write(d.path().join(format!("{pid}/cgroup")), text).unwrap();
        }
        let v2 = cgroup_of(d.path(), 42).unwrap();
        assert_eq!(
            (v2.path.as_str(), v2.v1),
            ("system.slice/banyandb.service", false)
        );
        let v1 = cgroup_of(d.path(), 44).unwrap();
        assert_eq!((v1.name().as_str(), v1.v1), ("memory:/process_api/x", true));
        assert_eq!(cgroup_of(d.path(), 43), None);
    }
}
