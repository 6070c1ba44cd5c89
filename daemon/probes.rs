//! Loading and attaching the BPF programs, family by family.
//!
//! One BPF object holds every family. Families are isolated at load time:
//! if the object does not load with every wanted family, each family is
//! tried alone and the ones the kernel refuses are left out (with the
//! verifier's or libbpf's reason). Attaching is then per program; a family
//! is attached when all its programs are.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use libbpf_rs::{Link, MapCore, MapHandle, Object, ObjectBuilder};
use serde::{Deserialize, Serialize};

use crate::family::{self, FamilyId};

mod skel {
    #![allow(clippy::all, unused_imports, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/iomon.skel.rs"));
}

/// The compiled BPF object (built by build.rs with libbpf-cargo).
const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/iomon.bpf.o"));

/// Layouts shared with the kernel side, generated from `bpf/iomon.h`.
pub use skel::types::iomon_proc as RawProc;

/// Indices into the `counters` map (`enum iomon_counter`).
pub mod counter {
    use super::skel::types::iomon_counter as C;
    pub const FADV_BASE: u32 = C::IOMON_C_FADV_BASE.0;
    pub const READ_CALLS_BASE: u32 = C::IOMON_C_READ_CALLS_BASE.0;
    pub const READ_BYTES_BASE: u32 = C::IOMON_C_READ_BYTES_BASE.0;
    pub const READ_ERRORS: u32 = C::IOMON_C_READ_ERRORS.0;
    pub const READ_LATENCY_NS: u32 = C::IOMON_C_READ_LATENCY_NS.0;
    pub const PC_ASKED: u32 = C::IOMON_C_PC_ASKED.0;
    pub const PC_MISSED_SYNC: u32 = C::IOMON_C_PC_MISSED_SYNC.0;
    pub const PC_MISSED_RA: u32 = C::IOMON_C_PC_MISSED_RA.0;
    pub const PC_READAHEAD: u32 = C::IOMON_C_PC_READAHEAD.0;
    pub const PC_ADDED: u32 = C::IOMON_C_PC_ADDED.0;
    pub const PC_DELETED: u32 = C::IOMON_C_PC_DELETED.0;
    pub const PC_READ_EVENTS: u32 = C::IOMON_C_PC_READ_EVENTS.0;
    pub const SCANNED_KSWAPD: u32 = C::IOMON_C_SCANNED_KSWAPD.0;
    pub const RECLAIMED_KSWAPD: u32 = C::IOMON_C_RECLAIMED_KSWAPD.0;
    pub const SCANNED_DIRECT: u32 = C::IOMON_C_SCANNED_DIRECT.0;
    pub const RECLAIMED_DIRECT: u32 = C::IOMON_C_RECLAIMED_DIRECT.0;
    pub const STALLS_DIRECT: u32 = C::IOMON_C_STALLS_DIRECT.0;
    pub const STALLS_MEMCG: u32 = C::IOMON_C_STALLS_MEMCG.0;
    pub const STALL_NS: u32 = C::IOMON_C_STALL_NS.0;
    pub const MM_FAULTS: u32 = C::IOMON_C_MM_FAULTS.0;
    pub const MM_MAJOR: u32 = C::IOMON_C_MM_MAJOR.0;
    pub const MM_AROUND: u32 = C::IOMON_C_MM_AROUND.0;
    pub const MM_ASKED: u32 = C::IOMON_C_MM_ASKED.0;
    pub const MM_MISSED_SYNC: u32 = C::IOMON_C_MM_MISSED_SYNC.0;
    pub const MM_MISSED_RA: u32 = C::IOMON_C_MM_MISSED_RA.0;
    pub const MM_READAHEAD: u32 = C::IOMON_C_MM_READAHEAD.0;
    pub const WB_DIRTIED: u32 = C::IOMON_C_WB_DIRTIED.0;
    pub const WB_WRITTEN: u32 = C::IOMON_C_WB_WRITTEN.0;
    pub const WB_INODES: u32 = C::IOMON_C_WB_INODES.0;
    pub const WB_AGE_NS: u32 = C::IOMON_C_WB_AGE_NS.0;
    pub const WB_THROTTLES: u32 = C::IOMON_C_WB_THROTTLES.0;
    pub const WB_THROTTLE_NS: u32 = C::IOMON_C_WB_THROTTLE_NS.0;
    pub const PROC_DROPPED: u32 = C::IOMON_C_PROC_DROPPED.0;
    pub const TASK_STATE_MISSING: u32 = C::IOMON_C_TASK_STATE_MISSING.0;
    pub const NR: u32 = C::IOMON_C_NR.0;
}

/// Indices of the histograms in the `hists` map (`enum iomon_hist`).
pub mod hist {
    use super::skel::types::iomon_hist as H;
    pub const READ_LATENCY: u32 = H::IOMON_H_READ_LATENCY.0;
    pub const STALL_LATENCY: u32 = H::IOMON_H_STALL_LATENCY.0;
    pub const DIRTY_AGE: u32 = H::IOMON_H_DIRTY_AGE.0;
    pub const THROTTLE: u32 = H::IOMON_H_THROTTLE.0;
    pub const NR: u32 = H::IOMON_H_NR.0;
}

/// Buckets per log2 histogram (`IOMON_HIST_BUCKETS`).
pub const HIST_BUCKETS: usize = 32;

/// Upper bound, in microseconds, of log2 histogram bucket `b`
/// (bucket b holds [2^b, 2^(b+1)) us; the last bucket is open-ended).
pub fn bucket_upper_us(b: usize) -> Option<u64> {
    (b + 1 < HIST_BUCKETS).then(|| 1u64 << (b + 1))
}

/// The `q` quantile (0..=1) of a log2 histogram, in microseconds: the upper
/// bound of the bucket it falls in (the lower bound for the open last
/// bucket); `None` for an empty histogram.
pub fn hist_quantile_us(hist: &[u64], q: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (b, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_upper_us(b).unwrap_or(1u64 << b));
        }
    }
    None
}

/// Where classic tracepoints are looked up.
pub const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("failed to open the BPF object")]
    Open(#[source] libbpf_rs::Error),
    #[error("failed to load the BPF object into the kernel (iomond needs root, or CAP_BPF and CAP_PERFMON)")]
    Load(#[source] libbpf_rs::Error),
    #[error("BPF map {0} is missing from the object (build mismatch)")]
    MissingMap(&'static str),
    #[error("failed to open BPF map {name}")]
    MapHandle {
        name: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
}

/// What became of one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FamilyState {
    /// Every program attached.
    Attached,
    /// Switched off in the config.
    Disabled,
    /// Wanted, but the kernel or the host would not have it.
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStatus {
    pub name: String,
    pub event: String,
    pub attached: bool,
    /// Why not, when not attached.
    pub reason: Option<String>,
    /// From the kernel's BPF stats, when `kernel.bpf_stats_enabled=1`.
    pub run_count: Option<u64>,
    pub run_time_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyStatus {
    pub family: FamilyId,
    pub about: String,
    pub state: FamilyState,
    pub programs: Vec<ProgramStatus>,
}

/// Handles on the maps the drain reads; owned (dup'ed fds).
pub struct Maps {
    pub counters: MapHandle,
    pub hists: MapHandle,
    /// The two per-process maps; `procs_active` says which one is written.
    pub procs: [MapHandle; 2],
    pub procs_active: MapHandle,
    /// Every map, for the entries-vs-capacity gauges.
    pub all: Vec<(String, MapHandle)>,
}

/// The loaded BPF object, its links, and what attached.
pub struct Probes {
    object: Object,
    links: BTreeMap<&'static str, Link>,
    status: Vec<FamilyStatus>,
}

/// Options fixed before the object is loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Families to attach.
    pub enabled: Vec<FamilyId>,
    /// Capacity of the per-process map.
    pub proc_capacity: u32,
    /// tracefs mount point.
    pub tracefs: PathBuf,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            enabled: family::ALL.iter().map(|f| f.id).collect(),
            proc_capacity: 10240,
            tracefs: PathBuf::from(TRACEFS),
        }
    }
}

/// Makes sure tracefs is mounted at `root` (classic tracepoints need it):
/// mounts it if it is not and this process may. `Err` says what to do.
pub fn ensure_tracefs(root: &Path) -> Result<(), String> {
    if root.join("events").is_dir() {
        return Ok(());
    }
    match nix::mount::mount(
        Some("tracefs"),
        root,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    ) {
        Ok(()) if root.join("events").is_dir() => {
            log::info!("mounted tracefs at {}", root.display());
            Ok(())
        }
        Ok(()) => Err(format!(
            "tracefs mounted at {} but has no events/ directory",
            root.display()
        )),
        Err(e) => Err(format!(
            "tracefs is not mounted at {} and mounting it failed ({e}); run `mount -t tracefs tracefs {}` as root",
            root.display(),
            root.display()
        )),
    }
}

fn open_object(
    wanted: &[FamilyId],
    proc_capacity: u32,
) -> Result<libbpf_rs::OpenObject, ProbeError> {
    let mut open = ObjectBuilder::default()
        .open_memory(OBJECT)
        .map_err(ProbeError::Open)?;
    for mut prog in open.progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        let on = family::ALL
            .iter()
            .filter(|f| wanted.contains(&f.id))
            .any(|f| f.programs.iter().any(|p| p.name == name))
            || (!wanted.is_empty() && family::CORE.iter().any(|p| p.name == name));
        prog.set_autoload(on);
    }
    for mut map in open.maps_mut() {
        if map.name() == "procs_a" || map.name() == "procs_b" {
            map.set_max_entries(proc_capacity.max(1))
                .map_err(ProbeError::Open)?;
        }
    }
    Ok(open)
}

/// First line of a libbpf error, which for a verifier failure is followed
/// by the whole log.
fn short(e: &libbpf_rs::Error) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

impl Probes {
    /// Loads the object with every family in `opts.enabled` that the kernel
    /// accepts, and attaches them. Fails only if nothing can be loaded at all.
    pub fn load(opts: &LoadOptions) -> Result<Probes, ProbeError> {
        let mut refused: BTreeMap<FamilyId, String> = BTreeMap::new();
        let mut wanted: Vec<FamilyId> = opts.enabled.clone();

        // Classic tracepoints need tracefs and their event directory.
        let tracefs = ensure_tracefs(&opts.tracefs);
        for f in family::ALL.iter().filter(|f| wanted.contains(&f.id)) {
            for p in f.programs {
                let Some(dir) = p.tracefs_dir() else { continue };
                let reason = match &tracefs {
                    Err(why) => Some(why.clone()),
                    Ok(()) if !opts.tracefs.join(&dir).join("id").exists() => Some(format!(
                        "tracepoint {} does not exist on this kernel ({} is missing)",
                        p.event,
                        opts.tracefs.join(&dir).display()
                    )),
                    Ok(()) => None,
                };
                if let Some(r) = reason {
                    refused.entry(f.id).or_insert(r);
                }
            }
        }
        wanted.retain(|id| !refused.contains_key(id));

        let object = match open_object(&wanted, opts.proc_capacity)?.load() {
            Ok(obj) => obj,
            Err(all_err) => {
                // Find the families the kernel refuses, one by one.
                log::debug!("BPF load with {wanted:?} failed: {}", short(&all_err));
                let mut ok = Vec::new();
                for id in &wanted {
                    match open_object(&[*id], opts.proc_capacity)?.load() {
                        Ok(_) => ok.push(*id),
                        Err(e) => {
                            refused.insert(
                                *id,
                                format!("the kernel refused its programs: {}", short(&e)),
                            );
                        }
                    }
                }
                if ok.is_empty() && !wanted.is_empty() {
                    return Err(ProbeError::Load(all_err));
                }
                wanted = ok;
                open_object(&wanted, opts.proc_capacity)?
                    .load()
                    .map_err(ProbeError::Load)?
            }
        };

        let mut probes = Probes {
            object,
            links: BTreeMap::new(),
            status: Vec::new(),
        };
        for f in family::ALL {
            let state = if !opts.enabled.contains(&f.id) {
                FamilyState::Disabled
            } else if let Some(r) = refused.get(&f.id) {
                FamilyState::Unavailable(r.clone())
            } else {
                FamilyState::Attached
            };
            let mut programs = Vec::new();
            let mut failure = None;
            for p in f.programs {
                let (attached, reason) = if state == FamilyState::Attached {
                    match probes.attach(p.name) {
                        Ok(()) => (true, None),
                        Err(e) => {
                            failure.get_or_insert_with(|| {
                                format!("{} failed to attach: {e}", p.event)
                            });
                            (false, Some(e))
                        }
                    }
                } else {
                    (false, None)
                };
                programs.push(ProgramStatus {
                    name: p.name.to_string(),
                    event: p.event.to_string(),
                    attached,
                    reason,
                    run_count: None,
                    run_time_ns: None,
                });
            }
            let state = match failure {
                Some(why) => {
                    // A family is all or nothing: half a family counts wrong.
                    for p in f.programs {
                        probes.links.remove(p.name);
                    }
                    for ps in &mut programs {
                        ps.attached = false;
                    }
                    FamilyState::Unavailable(why)
                }
                None => state,
            };
            probes.status.push(FamilyStatus {
                family: f.id,
                about: f.about.to_string(),
                state,
                programs,
            });
        }
        if probes.any_attached() {
            for p in family::CORE {
                if let Err(e) = probes.attach(p.name) {
                    // Names of processes that exec after their first event
                    // stay the pre-exec ones; counts are unaffected.
                    log::warn!(
                        "{} failed to attach: {e}; process names may be stale",
                        p.event
                    );
                }
            }
        }
        Ok(probes)
    }

    fn attach(&mut self, name: &'static str) -> Result<(), String> {
        let prog = self
            .object
            .progs_mut()
            .find(|p| p.name() == name)
            .ok_or_else(|| format!("program {name} is not in the BPF object"))?;
        let link = prog.attach().map_err(|e| short(&e))?;
        self.links.insert(name, link);
        Ok(())
    }

    /// The state of every family, with BPF run stats where the kernel keeps
    /// them.
    pub fn status(&self) -> Vec<FamilyStatus> {
        let mut status = self.status.clone();
        for fs in &mut status {
            for ps in &mut fs.programs {
                if let Some(prog) = self.object.progs().find(|p| p.name() == ps.name.as_str()) {
                    if let Some((cnt, ns)) = prog_run_stats(&prog) {
                        ps.run_count = Some(cnt);
                        ps.run_time_ns = Some(ns);
                    }
                }
            }
        }
        status
    }

    pub fn attached(&self, id: FamilyId) -> bool {
        self.status
            .iter()
            .any(|s| s.family == id && s.state == FamilyState::Attached)
    }

    pub fn any_attached(&self) -> bool {
        self.status.iter().any(|s| s.state == FamilyState::Attached)
    }

    pub fn maps(&self) -> Result<Maps, ProbeError> {
        let handle = |name: &'static str| -> Result<MapHandle, ProbeError> {
            let map = self
                .object
                .maps()
                .find(|m| m.name() == name)
                .ok_or(ProbeError::MissingMap(name))?;
            MapHandle::try_from(&map).map_err(|source| ProbeError::MapHandle { name, source })
        };
        let all = vec![("ra_windows".to_string(), handle("ra_windows")?)];
        Ok(Maps {
            counters: handle("counters")?,
            hists: handle("hists")?,
            procs: [handle("procs_a")?, handle("procs_b")?],
            procs_active: handle("procs_active")?,
            all,
        })
    }
}

/// (run count, run time ns) of a program; `None` unless
/// `kernel.bpf_stats_enabled` is on.
fn prog_run_stats(prog: &libbpf_rs::Program) -> Option<(u64, u64)> {
    use std::os::fd::{AsFd, AsRawFd};
    let mut info = libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a valid, writable bpf_prog_info of `len` bytes.
    let ret = unsafe {
        libbpf_sys::bpf_prog_get_info_by_fd(prog.as_fd().as_raw_fd(), &mut info, &mut len)
    };
    if ret != 0 || info.run_cnt == 0 && info.run_time_ns == 0 {
        return None;
    }
    Some((info.run_cnt, info.run_time_ns))
}

/// Whether the kernel keeps BPF run stats (`kernel.bpf_stats_enabled`).
pub fn bpf_stats_enabled() -> io::Result<bool> {
    Ok(fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")?.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        let mut h = vec![0u64; HIST_BUCKETS];
        h[0] = 50; // < 2 us
        h[3] = 49; // 8..16 us
        h[10] = 1; // 1024..2048 us
        assert_eq!(hist_quantile_us(&h, 0.5), Some(2));
        assert_eq!(hist_quantile_us(&h, 0.9), Some(16));
        assert_eq!(hist_quantile_us(&h, 1.0), Some(2048));
        assert_eq!(hist_quantile_us(&[0; 4], 0.5), None);
    }

    #[test]
    fn tracefs_dirs_only_for_classic_tracepoints() {
        for f in family::ALL {
            for p in f.programs {
                assert_eq!(
                    p.tracefs_dir().is_some(),
                    p.event.starts_with("tracepoint:"),
                    "{}",
                    p.event
                );
            }
        }
    }
}
