//! Loading and attaching the BPF programs, family by family.
//!
//! One BPF object holds every family and every route. Before anything is
//! loaded, the kernel is asked what it has ([`kernel`]); each wanted
//! family takes the first of its routes (bpf/families/<name>.toml) whose
//! events, functions and helpers this kernel has, and only those programs
//! are loaded (`set_autoload`) and only the maps they use created
//! (`set_autocreate`). A family the kernel cannot have is *unavailable*
//! (not an error: nothing to alert on); one that should work and fails
//! (refused by the verifier, an attach error) is *failed*, and if another
//! route is left it is tried, so one family never takes the others down.

pub mod kernel;
pub mod missed;
mod on_demand;
pub mod targets;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use libbpf_rs::{Link, MapCore, MapHandle, Object, ObjectBuilder, OpenObject};
use serde::{Deserialize, Serialize};

use crate::abi::{self, Attach, Route};
use crate::family::{self, Family};
pub use kernel::{ensure_tracefs, Gap, Kernel};

mod skel {
    #![allow(clippy::all, unused_imports, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/iomon.skel.rs"));
}

/// The compiled BPF object (built by build.rs with libbpf-cargo).
const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/iomon.bpf.o"));

/// `struct iomon_proc`: the name, the target mask (u32), the kernel's
/// own target cache (two u32) and padding, then room for `abi::PROC_CAP`
/// u64 fields, of which `abi::PROC_NR` are used.
pub const PROC_COMM_LEN: usize = 16;
pub const PROC_VALUES_AT: usize = PROC_COMM_LEN + 16;
pub const PROC_VALUE_SIZE: usize = PROC_VALUES_AT + 8 * abi::PROC_CAP;
const _: () = assert!(std::mem::size_of::<skel::types::iomon_proc>() == PROC_VALUE_SIZE);
// The per-file numbers: the kernel's IOMON_F_NR u64s, named in Rust.
const _: () =
    assert!(std::mem::size_of::<skel::types::iomon_file>() == 8 * crate::banyandb::field::NR);

/// Programs every family relies on (per-process names, targets), declared
/// in `bpf/core.toml`; attached whenever any family is.
pub fn core_programs() -> &'static [abi::Program] {
    abi::CORE.routes.first().map_or(&[], |r| r.programs)
}

/// Maps the drain reads: always created, whatever the routes.
const DRAIN_MAPS: &[&str] = &[
    "counters",
    "hists",
    "procs_a",
    "procs_b",
    "procs_maps",
    "maps_gen",
    "rcu_barrier",
    "rcu_barrier_inner",
    "targets",
    "files_a",
    "files_b",
    "files_maps",
    "target_file_set",
    "evicted_blocks",
];

/// Every map some route names: created only when such a route is loaded.
fn route_maps() -> impl Iterator<Item = &'static str> {
    family::ALL
        .iter()
        .flat_map(|f| f.schema.routes)
        .flat_map(|r| r.maps.iter().copied())
}

/// Where classic tracepoints are looked up.
pub const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error("failed to open the BPF object")]
    Open(#[source] libbpf_rs::Error),
    #[error("failed to load the BPF programs: {0}")]
    Load(String),
    #[error("BPF map {0} is missing from the object (build mismatch)")]
    MissingMap(&'static str),
    #[error("failed to open BPF map {name}")]
    MapHandle {
        name: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
}

/// What became of one family. (JSON: `"attached"`, `"disabled"`,
/// `{"unavailable": why}`, `{"failed": why}`.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FamilyState {
    /// Every program of its route attached.
    Attached,
    /// Switched off in the config.
    Disabled,
    /// This kernel lacks what every route needs: not an error.
    Unavailable(String),
    /// A route this kernel has failed (verifier, attach, privileges): an
    /// error worth an alert.
    Failed(String),
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
    /// Times the kernel skipped the program because a BPF program or a
    /// `bpf()` map operation was already running on that CPU (an
    /// interrupt's event meeting one): each is an event not counted. Kept
    /// by the kernel whatever the sysctl: tp_btf programs' from 5.12,
    /// classic tracepoints' from 6.7 (before, they are skipped the same
    /// way but not counted). `None` before the program is read.
    #[serde(default)]
    pub missed: Option<u64>,
    /// A program attached on demand (its route's `when`): the family's
    /// counter whose first count attaches it, or `vmstat:A+B` (see
    /// `on_demand::Sign`). Not attached until then, and not missing: its
    /// work is not needed yet.
    #[serde(default)]
    pub on_demand: Option<String>,
}

impl ProgramStatus {
    /// Attached on demand, and not needed yet (nor failed).
    pub fn is_waiting(&self) -> bool {
        self.on_demand.is_some() && !self.attached && self.reason.is_none()
    }

    /// Waiting on demand: what will attach it, to show (else None).
    pub fn waiting(&self) -> Option<String> {
        let when = self.on_demand.as_deref().filter(|_| self.is_waiting())?;
        Some(format!(
            "on demand: {}",
            on_demand::Sign::of(when).describe()
        ))
    }

    /// Not attached, and not because its work is not needed yet.
    pub fn missing(&self) -> bool {
        !self.attached && !self.is_waiting()
    }
}

/// A route not taken, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSkipped {
    pub route: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyStatus {
    pub family: String,
    pub about: String,
    pub state: FamilyState,
    /// The route in use (or that failed last); `None` when none applies.
    pub route: Option<String>,
    /// The route's programs (the first route's when none applies).
    pub programs: Vec<ProgramStatus>,
    /// Routes before it that this kernel could not have, and why.
    pub skipped: Vec<RouteSkipped>,
}

impl FamilyStatus {
    /// Whether this kernel has a route for the family (attached or not).
    pub fn available(&self) -> bool {
        !matches!(self.state, FamilyState::Unavailable(_))
    }
}

/// Handles on the maps the drain reads; owned (dup'ed fds).
pub struct Maps {
    pub counters: MapHandle,
    pub hists: MapHandle,
    /// The two per-process maps; the low bit of `maps_gen[0]` says which
    /// one is written.
    pub procs: [MapHandle; 2],
    /// Which map of each pair programs write to: entry 0 the per-process
    /// pair, entry 1 the per-file pair (the low bit).
    pub maps_gen: MapHandle,
    /// A map-in-map nothing reads and its one inner map: updating it waits
    /// for an RCU grace period (the drain's barrier).
    pub barrier: MapHandle,
    pub barrier_inner: MapHandle,
    /// The targets the programs count for (one entry).
    pub targets: MapHandle,
    /// The two per-file maps of targets (see `maps_gen`).
    pub files: [MapHandle; 2],
    /// The files targets touched (for their evictions).
    pub file_set: MapHandle,
    /// Blocks of targets' files with evicted pages (for their refaults).
    pub evicted_blocks: MapHandle,
    /// Every other map that was created, for the entries-vs-capacity
    /// gauges.
    pub others: Vec<(String, MapHandle)>,
    /// The rows maps of the loaded families that declare rows.
    pub rows: Vec<(&'static crate::abi::Schema, MapHandle)>,
}

/// Options fixed before the object is loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Families to attach, by name.
    pub enabled: Vec<&'static str>,
    /// Capacity of the per-process map.
    pub proc_capacity: u32,
    /// Pages of a target's file read back within this long after they
    /// were evicted are refaults (0: not looked for).
    pub refault_window_ns: u64,
    /// Blocks of targets' files with evicted pages the kernel remembers.
    pub refault_blocks: u32,
    /// tracefs mount point.
    pub tracefs: PathBuf,
    /// Routes not to use, as `family:route` (tests and benchmarks force
    /// a route this way).
    pub exclude_routes: Vec<String>,
    /// Time every event with iomon's own timestamps, also where the kernel
    /// stamps it (block requests on queues with completion stats): tests
    /// of the path taken where it does not.
    pub own_timestamps: bool,
    /// Bounds to create maps with instead of their declared ones, by map
    /// name (tests overflow a small map this way).
    pub map_bounds: Vec<(&'static str, u32)>,
    /// Walk the page cache by probe reads also where the kernel could load
    /// it directly (mmap's fentry and kprobe routes on 6.2+): tests compare
    /// the two.
    pub probe_read_walks: bool,
    /// Attach the programs a route attaches on demand at once, with the
    /// rest (tests whose subject is their work, not when it starts).
    pub on_demand_at_load: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            enabled: family::ALL
                .iter()
                .filter(|f| f.schema.default_on)
                .map(|f| f.name())
                .collect(),
            proc_capacity: 10240,
            refault_window_ns: 300 * 1_000_000_000,
            refault_blocks: 16_384,
            tracefs: PathBuf::from(TRACEFS),
            exclude_routes: Vec::new(),
            own_timestamps: false,
            map_bounds: Vec::new(),
            probe_read_walks: false,
            on_demand_at_load: false,
        }
    }
}

/// A family's plan: the route to load, or why there is none.
#[derive(Debug, Clone)]
enum Plan {
    Disabled,
    Route(&'static Route),
    Unavailable(String),
    Failed { route: &'static Route, why: String },
}

/// The loaded BPF object, its links, and what attached.
pub struct Probes {
    object: Object,
    links: BTreeMap<&'static str, Link>,
    status: Vec<FamilyStatus>,
    /// What the kernel has (for --check and the probes view).
    pub kernel_release: String,
    /// CONFIG_HZ and where it came from; `None`: the dirty age of
    /// writeback is not measured.
    pub hz: Option<(u32, &'static str)>,
    pub page_shift: u32,
}

/// First line of a libbpf error, which for a verifier failure is followed
/// by the whole log.
fn short(e: &libbpf_rs::Error) -> String {
    let s = format!("{e:#}");
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

/// Whether the kernel refused for want of privileges (EPERM). The
/// verifier refuses a program with EACCES, which Rust's error kinds fold
/// into the same PermissionDenied: that is a route this kernel cannot
/// take, told by the errno in the message.
fn is_permission(e: &libbpf_rs::Error) -> bool {
    matches!(e.kind(), libbpf_rs::ErrorKind::PermissionDenied)
        && !format!("{e:#}").contains(&format!("(os error {})", libc::EACCES))
}

/// What this kernel lacks for a route, or this process may not use
/// (empty: the route can be loaded).
fn gaps(kernel: &mut Kernel, route: &Route) -> Vec<Gap> {
    let mut out: Vec<Gap> = Vec::new();
    let mut push = |g: Gap| {
        if !out.contains(&g) {
            out.push(g);
        }
    };
    for h in route.hooks {
        if let Some(sh) = abi::shared_of(h) {
            if let Err(g) = kernel.way(sh) {
                push(g);
            }
        }
    }
    for p in route.programs {
        let gap = match p.attach() {
            Attach::Tracepoint(cat, ev) => kernel.tracepoint(cat, ev).err(),
            Attach::TpBtf(ev) if !kernel.has_btf_tracepoint(ev) => Some(Gap::Lacks(format!(
                "no tracepoint {ev} with typed arguments (tp_btf) on this kernel"
            ))),
            Attach::TpBtf(ev) => p.arg.and_then(|want| {
                let got = kernel.btf_tracepoint_arg(ev, 0);
                (got.as_deref() != Some(want)).then(|| {
                    Gap::Lacks(format!(
                        "tracepoint {ev} passes a {} first on this kernel, not a {want}",
                        got.as_deref().unwrap_or("non-struct")
                    ))
                })
            }),
            Attach::Trampoline(func) => kernel.trampoline(func).err(),
            Attach::Kprobe(func) => kernel.kprobe(func).err(),
        };
        if let Some(g) = gap {
            push(g);
        }
    }
    for need in route.needs {
        if let Some(a) = need.strip_prefix("arch:") {
            if a != std::env::consts::ARCH {
                push(Gap::Lacks(format!(
                    "a route for {a} only (this is {})",
                    std::env::consts::ARCH
                )));
            }
        }
        if let Some(h) = need.strip_prefix("helper:") {
            if !kernel.has_helper(h) {
                let since = match h {
                    "task_pt_regs" => " (Linux 5.15+)",
                    "task_storage_get" | "get_current_task_btf" => " (Linux 5.11+)",
                    "find_vma" => " (Linux 5.17+)",
                    _ => "",
                };
                push(Gap::Lacks(format!(
                    "no BPF helper bpf_{h} on this kernel{since}"
                )));
            }
        }
        if let Some(k) = need.strip_prefix("kfunc:") {
            if !kernel.has_function(k) {
                let since = match k {
                    "bpf_rdonly_cast" => " (Linux 6.2+)",
                    _ => "",
                };
                push(Gap::Lacks(format!("no kfunc {k} on this kernel{since}")));
            }
        }
    }
    out
}

/// The first route of a family this kernel has, not excluded; else why
/// not (every route's gaps), and whether only privileges stood in the
/// way of one (then the family failed, rather than being unavailable).
fn choose(
    kernel: &mut Kernel,
    f: &Family,
    excluded: &[String],
) -> (Option<&'static Route>, Vec<RouteSkipped>, Option<String>) {
    let mut skipped = Vec::new();
    let mut privilege = None;
    for r in f.schema.routes {
        if excluded
            .iter()
            .any(|e| e.split_once(':') == Some((f.name(), r.name)))
        {
            skipped.push(RouteSkipped {
                route: r.name.into(),
                why: "excluded".into(),
            });
            continue;
        }
        let g = gaps(kernel, r);
        if g.is_empty() {
            return (Some(r), skipped, None);
        }
        if g.iter().all(|g| matches!(g, Gap::Privilege(_))) {
            privilege.get_or_insert_with(|| g[0].text().to_string());
        }
        skipped.push(RouteSkipped {
            route: r.name.into(),
            why: kernel::join_gaps(&g),
        });
    }
    (None, skipped, privilege)
}

/// What loading a route loads on this kernel: its programs and, for each
/// of its hooks, the program of the way chosen for that shared event.
fn route_programs(kernel: &Kernel, route: &Route) -> Vec<abi::Program> {
    route.loaded_programs_by(&|sh| kernel.chosen_way(sh))
}

/// Opens the object with the programs of these routes and the maps they
/// use, configured for this kernel.
fn open_object(
    routes: &[&'static Route],
    kernel: &Kernel,
    opts: &LoadOptions,
) -> Result<OpenObject, ProbeError> {
    let proc_capacity = opts.proc_capacity;
    let mut open = ObjectBuilder::default()
        .open_memory(OBJECT)
        .map_err(ProbeError::Open)?;
    let any = !routes.is_empty();
    for mut prog in open.progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        let on = routes
            .iter()
            .any(|r| route_programs(kernel, r).iter().any(|p| p.name == name))
            || (any && core_programs().iter().any(|p| p.name == name));
        prog.set_autoload(on);
    }
    // The chosen routes' hooks in the shared events' programs; the
    // verifier drops every other hook's call.
    let hooks = routes.iter().fold(0u64, |m, r| m | r.hook_mask());
    let uses = |m: &str| routes.iter().any(|r| r.maps.contains(&m));
    let task_storage = kernel.has_task_storage();
    // Per-thread state is always there: every program may cache its
    // thread's targets in it. Task storage costs nothing until used; the
    // thread-id hash (before 5.11) is preallocated.
    for mut map in open.maps_mut() {
        let name = map.name().to_string_lossy().into_owned();
        let create = match name.as_str() {
            "task_states" => task_storage,
            "thread_hash" => !task_storage,
            n if route_maps().any(|m| m == n) => uses(n),
            _ => true,
        };
        map.set_autocreate(create).map_err(ProbeError::Open)?;
        if name == "procs_a" || name == "procs_b" {
            map.set_max_entries(proc_capacity.max(1))
                .map_err(ProbeError::Open)?;
        }
        if name == "evicted_blocks" {
            map.set_max_entries(opts.refault_blocks.max(1))
                .map_err(ProbeError::Open)?;
        }
        if let Some((_, n)) = opts.map_bounds.iter().find(|(m, _)| *m == name) {
            map.set_max_entries((*n).max(1)).map_err(ProbeError::Open)?;
        }
        if name.ends_with(".rodata") {
            if let Some(data) = map.initial_value_mut() {
                let mut set = |off: usize, v: u32| {
                    if let Some(d) = data.get_mut(off..off + 4) {
                        d.copy_from_slice(&v.to_ne_bytes());
                    }
                };
                set(
                    std::mem::offset_of!(skel::types::rodata, page_shift),
                    kernel.page_shift,
                );
                set(
                    std::mem::offset_of!(skel::types::rodata, kernel_hz),
                    kernel.hz.map_or(0, |(hz, _)| hz),
                );
                let mut set64 = |off: usize, v: u64| {
                    if let Some(d) = data.get_mut(off..off + 8) {
                        d.copy_from_slice(&v.to_ne_bytes());
                    }
                };
                set64(
                    std::mem::offset_of!(skel::types::rodata, iomon_hooks),
                    hooks,
                );
                set64(
                    std::mem::offset_of!(skel::types::rodata, refault_window_ns),
                    opts.refault_window_ns,
                );
                let off = std::mem::offset_of!(skel::types::rodata, blk_no_rq_stamps);
                if let Some(d) = data.get_mut(off) {
                    *d = u8::from(opts.own_timestamps);
                }
                // mmap's rss_stat program skips its VMA lookup when the
                // mm's shared file-page count moved by at most 256 pages:
                // sound only while a 512-page PMD mapping always moves it
                // further (the kernel's batch, max(32, 2 * online CPUs),
                // at most 256). Unknown: every change looked at.
                let off = std::mem::offset_of!(skel::types::rodata, rss_batch_below_pmd);
                if let Some(d) = data.get_mut(off) {
                    *d = u8::from(libbpf_rs::num_possible_cpus().is_ok_and(|n| n <= 128));
                }
                // mmap's fentry and kprobe routes walk the page cache by
                // direct loads where the kernel has this kfunc (6.2+), by
                // probe reads where not (its call is then left unresolved,
                // in a branch the verifier drops).
                let off = std::mem::offset_of!(skel::types::rodata, has_rdonly_cast);
                if let Some(d) = data.get_mut(off) {
                    *d = u8::from(kernel.has_function("bpf_rdonly_cast") && !opts.probe_read_walks);
                }
            }
        }
    }
    Ok(open)
}

fn program_statuses(
    kernel: &Kernel,
    route: &Route,
    attached: bool,
    reason: Option<&str>,
) -> Vec<ProgramStatus> {
    route_programs(kernel, route)
        .iter()
        .map(|p| ProgramStatus {
            name: p.name.to_string(),
            event: p.event.to_string(),
            attached,
            reason: reason.map(str::to_string),
            run_count: None,
            run_time_ns: None,
            missed: None,
            on_demand: p.when.map(str::to_string),
        })
        .collect()
}

impl Probes {
    /// Loads and attaches every family in `opts.enabled` that this kernel
    /// has a route for. Fails only if BPF cannot be used at all.
    pub fn load(opts: &LoadOptions) -> Result<Probes, ProbeError> {
        let mut kernel = Kernel::probe(&opts.tracefs)?;
        let mut excluded = opts.exclude_routes.clone();
        let mut plans: BTreeMap<&'static str, (Plan, Vec<RouteSkipped>)> = BTreeMap::new();
        for f in family::ALL {
            let plan = if !opts.enabled.contains(&f.name()) {
                (Plan::Disabled, Vec::new())
            } else {
                let (route, skipped, privilege) = choose(&mut kernel, f, &excluded);
                match (route, privilege) {
                    (Some(r), _) => (Plan::Route(r), skipped),
                    (None, Some(why)) => (
                        Plan::Failed {
                            route: &f.schema.routes[0],
                            why,
                        },
                        skipped,
                    ),
                    (None, None) => {
                        let why = skipped
                            .iter()
                            .map(|s| s.why.as_str())
                            .find(|w| *w != "excluded")
                            .unwrap_or("every route is excluded")
                            .to_string();
                        (Plan::Unavailable(why), skipped)
                    }
                }
            };
            plans.insert(f.name(), plan);
        }

        // Load; a family the kernel refuses after all moves to its next
        // route (or fails) and the rest load again. Bounded: every round
        // takes a route out of play.
        for _round in 0..=family::ALL
            .iter()
            .map(|f| f.schema.routes.len())
            .sum::<usize>()
        {
            let routes: Vec<&'static Route> = plans
                .values()
                .filter_map(|(p, _)| match p {
                    Plan::Route(r) => Some(*r),
                    _ => None,
                })
                .collect();
            let loaded = open_object(&routes, &kernel, opts)?.load();
            let object = match loaded {
                Ok(o) => o,
                Err(all_err) => {
                    if is_permission(&all_err) {
                        return Err(ProbeError::Load(format!(
                            "{} (iomond needs root, or CAP_BPF and CAP_PERFMON)",
                            short(&all_err)
                        )));
                    }
                    log::debug!("BPF load failed: {}", short(&all_err));
                    // Which family? Each alone.
                    let mut culprit = false;
                    for f in family::ALL {
                        let Some((Plan::Route(r), _)) = plans.get(f.name()) else {
                            continue;
                        };
                        let r = *r;
                        if let Err(e) = open_object(&[r], &kernel, opts)?.load() {
                            culprit = true;
                            let why = format!("the kernel refused route {}: {}", r.name, short(&e));
                            log::warn!("probe family {}: {why}", f.name());
                            excluded.push(format!("{}:{}", f.name(), r.name));
                            let (next, mut more, _) = choose(&mut kernel, f, &excluded);
                            let entry = plans.get_mut(f.name()).expect("planned above");
                            entry.1.retain(|s| s.route != r.name);
                            entry.1.push(RouteSkipped {
                                route: r.name.into(),
                                why: why.clone(),
                            });
                            more.retain(|s| !entry.1.iter().any(|t| t.route == s.route));
                            entry.1.extend(more);
                            entry.0 = match next {
                                Some(n) => Plan::Route(n),
                                None => Plan::Failed { route: r, why },
                            };
                        }
                    }
                    if !culprit {
                        return Err(ProbeError::Load(short(&all_err)));
                    }
                    continue;
                }
            };
            let mut probes = Probes {
                object,
                links: BTreeMap::new(),
                status: Vec::new(),
                kernel_release: kernel.release.clone(),
                hz: kernel.hz,
                page_shift: kernel.page_shift,
            };
            let mut retry = false;
            for f in family::ALL {
                let (plan, skipped) = plans.get(f.name()).cloned().expect("every family planned");
                let status = match plan {
                    Plan::Disabled => FamilyStatus {
                        family: f.name().into(),
                        about: f.schema.about.into(),
                        state: FamilyState::Disabled,
                        route: None,
                        programs: program_statuses(&kernel, &f.schema.routes[0], false, None),
                        skipped,
                    },
                    Plan::Unavailable(why) => FamilyStatus {
                        family: f.name().into(),
                        about: f.schema.about.into(),
                        state: FamilyState::Unavailable(why),
                        route: None,
                        programs: program_statuses(&kernel, &f.schema.routes[0], false, None),
                        skipped,
                    },
                    Plan::Failed { route, why } => FamilyStatus {
                        family: f.name().into(),
                        about: f.schema.about.into(),
                        state: FamilyState::Failed(why.clone()),
                        route: Some(route.name.into()),
                        programs: program_statuses(&kernel, route, false, Some(&why)),
                        skipped,
                    },
                    Plan::Route(route) => {
                        let mut programs = Vec::new();
                        let mut failure = None;
                        for p in route_programs(&kernel, route) {
                            // None: attached on demand, later.
                            let r = (p.when.is_none() || opts.on_demand_at_load)
                                .then(|| probes.attach(p.name));
                            if let Some(Err(e)) = &r {
                                failure.get_or_insert_with(|| {
                                    format!("{} failed to attach: {e}", p.event)
                                });
                            }
                            programs.push(ProgramStatus {
                                name: p.name.into(),
                                event: p.event.into(),
                                attached: matches!(r, Some(Ok(()))),
                                reason: r.and_then(Result::err),
                                run_count: None,
                                run_time_ns: None,
                                missed: None,
                                on_demand: p.when.map(str::to_string),
                            });
                        }
                        if let Some(why) = failure {
                            // A family is all or nothing: half a family
                            // counts wrong. Another route if there is one,
                            // else failed; either way the object loads
                            // again without this route (its hooks out of
                            // the shared programs).
                            excluded.push(format!("{}:{}", f.name(), route.name));
                            let (next, _, _) = choose(&mut kernel, f, &excluded);
                            let entry = plans.get_mut(f.name()).expect("planned above");
                            entry.1.push(RouteSkipped {
                                route: route.name.into(),
                                why: why.clone(),
                            });
                            entry.0 = match next {
                                Some(n) => Plan::Route(n),
                                None => Plan::Failed { route, why },
                            };
                            retry = true;
                            continue;
                        }
                        FamilyStatus {
                            family: f.name().into(),
                            about: f.schema.about.into(),
                            state: FamilyState::Attached,
                            route: Some(route.name.into()),
                            programs,
                            skipped,
                        }
                    }
                };
                probes.status.push(status);
            }
            if retry {
                continue;
            }
            if probes.any_attached() {
                for p in core_programs() {
                    if let Err(e) = probes.attach(p.name) {
                        // Names of processes that exec after their first
                        // event stay the pre-exec ones; counts are
                        // unaffected.
                        log::warn!(
                            "{} failed to attach: {e}; process names may be stale",
                            p.event
                        );
                    }
                }
            }
            return Ok(probes);
        }
        Err(ProbeError::Load("no combination of routes loaded".into()))
    }

    fn attach(&mut self, name: &'static str) -> Result<(), String> {
        if self.links.contains_key(name) {
            return Ok(());
        }
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
    /// them and every attached program's skipped runs.
    pub fn status(&self) -> Vec<FamilyStatus> {
        let mut status = self.status.clone();
        for fs in &mut status {
            for ps in fs.programs.iter_mut().filter(|p| p.attached) {
                let Some(prog) = self.object.progs().find(|p| p.name() == ps.name.as_str()) else {
                    continue;
                };
                let Some(info) = prog_info(&prog) else {
                    continue;
                };
                if info.run_cnt != 0 || info.run_time_ns != 0 {
                    ps.run_count = Some(info.run_cnt);
                    ps.run_time_ns = Some(info.run_time_ns);
                }
                ps.missed = Some(info.recursion_misses);
            }
        }
        status
    }

    /// The helper calls in a loaded program as the kernel runs it (after
    /// the verifier: helpers it inlines and branches it dropped are not
    /// there; BPF subprograms' calls counted), or None if it is not loaded.
    pub fn helper_calls(&self, program: &str) -> Option<usize> {
        let prog = self.object.progs().find(|p| p.name() == program)?;
        let len = prog_info(&prog)?.xlated_prog_len as usize;
        let mut insns = vec![0u64; len.div_ceil(8)];
        let want = libbpf_sys::bpf_prog_info {
            xlated_prog_len: u32::try_from(insns.len() * 8).ok()?,
            xlated_prog_insns: insns.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `insns` holds the xlated_prog_len bytes `want` names.
        let info = unsafe { prog_info_into(&prog, want) }?;
        if info.xlated_prog_len as usize > insns.len() * 8 {
            return None;
        }
        insns.truncate(info.xlated_prog_len as usize / 8);
        // struct bpf_insn: code (byte 0), dst_reg:4 src_reg:4 (byte 1:
        // src_reg the high half on little-endian x86_64 and arm64); a
        // helper call is BPF_JMP | BPF_CALL with src_reg 0.
        Some(
            insns
                .iter()
                .map(|i| i.to_ne_bytes())
                .filter(|b| b[0] == 0x85 && b[1] >> 4 == 0)
                .count(),
        )
    }

    /// Each attached program's skipped runs so far (see
    /// [`ProgramStatus::missed`]): (family, program, count).
    pub fn missed_runs(&self) -> Vec<(String, String, u64)> {
        self.status()
            .into_iter()
            .flat_map(|f| {
                let family = f.family;
                f.programs
                    .into_iter()
                    .filter_map(move |p| Some((family.clone(), p.name, p.missed?)))
            })
            .collect()
    }

    pub fn attached(&self, name: &str) -> bool {
        self.status
            .iter()
            .any(|s| s.family == name && s.state == FamilyState::Attached)
    }

    /// Names of the attached families, in display order.
    pub fn attached_families(&self) -> Vec<&'static str> {
        family::ALL
            .iter()
            .map(|f| f.name())
            .filter(|n| self.attached(n))
            .collect()
    }

    pub fn any_attached(&self) -> bool {
        self.status.iter().any(|s| s.state == FamilyState::Attached)
    }

    /// Histograms that are not measured on this kernel, because the
    /// daemon could not tell the programs what they need (`needs` in the
    /// declaration): (family, histogram index). The drain leaves them
    /// empty (absent), never zero.
    pub fn unmeasured_hists(&self) -> Vec<(&'static str, usize)> {
        let mut v = Vec::new();
        for f in family::ALL {
            for (i, h) in f.schema.hists.iter().enumerate() {
                let measured = match h.needs {
                    Some("kernel_hz") => self.hz.is_some(),
                    _ => true,
                };
                if !measured {
                    v.push((f.name(), i));
                }
            }
        }
        v
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
        // Every other hash the programs fill, for the entries-vs-capacity
        // gauges; maps not created for this kernel or these routes have no
        // fd.
        let mut others = Vec::new();
        for m in self.object.maps() {
            let name = m.name().to_string_lossy().into_owned();
            let hashed = matches!(
                m.map_type(),
                libbpf_rs::MapType::Hash | libbpf_rs::MapType::LruHash
            );
            if !hashed || DRAIN_MAPS.contains(&name.as_str()) {
                continue;
            }
            if let Ok(h) = MapHandle::try_from(&m) {
                others.push((name, h));
            }
        }
        Ok(Maps {
            counters: handle("counters")?,
            hists: handle("hists")?,
            procs: [handle("procs_a")?, handle("procs_b")?],
            maps_gen: handle("maps_gen")?,
            barrier: handle("rcu_barrier")?,
            barrier_inner: handle("rcu_barrier_inner")?,
            targets: handle("targets")?,
            files: [handle("files_a")?, handle("files_b")?],
            file_set: handle("target_file_set")?,
            evicted_blocks: handle("evicted_blocks")?,
            others,
            // Created only with one of the family's routes (a map that was
            // not has no fd).
            rows: crate::abi::SCHEMAS
                .iter()
                .filter_map(|s| {
                    let rows = s.rows.as_ref()?;
                    let m = self.object.maps().find(|m| m.name() == rows.map)?;
                    Some((*s, MapHandle::try_from(&m).ok()?))
                })
                .collect(),
        })
    }
}

/// What the kernel says of a loaded program (run stats are 0 unless
/// `kernel.bpf_stats_enabled` is on; a kernel older than a field leaves it
/// 0).
fn prog_info(prog: &libbpf_rs::Program) -> Option<libbpf_sys::bpf_prog_info> {
    // SAFETY: a default bpf_prog_info names no buffer.
    unsafe { prog_info_into(prog, libbpf_sys::bpf_prog_info::default()) }
}

/// The same, with the buffers `info` names (xlated instructions, ...)
/// filled in.
///
/// # Safety
///
/// Every buffer `info` names must be writable for the length it gives.
unsafe fn prog_info_into(
    prog: &libbpf_rs::Program,
    mut info: libbpf_sys::bpf_prog_info,
) -> Option<libbpf_sys::bpf_prog_info> {
    use std::os::fd::{AsFd, AsRawFd};
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: info is a valid, writable bpf_prog_info of `len` bytes, and
    // every buffer it names is writable for its length (the caller's
    // promise).
    let ret = unsafe {
        libbpf_sys::bpf_prog_get_info_by_fd(prog.as_fd().as_raw_fd(), &mut info, &mut len)
    };
    (ret == 0).then_some(info)
}

/// Whether the kernel keeps BPF run stats (`kernel.bpf_stats_enabled`).
pub fn bpf_stats_enabled() -> io::Result<bool> {
    Ok(fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")?.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracefs_dirs_only_for_classic_tracepoints() {
        for f in family::ALL {
            for p in f.schema.all_programs() {
                assert_eq!(
                    p.tracefs_dir().is_some(),
                    p.event.starts_with("tracepoint:"),
                    "{}",
                    p.event
                );
            }
        }
    }

    #[test]
    fn a_needed_kfunc_is_looked_up_in_the_kernels_btf() {
        let Ok(mut k) = Kernel::probe(std::path::Path::new("/nonexistent")) else {
            eprintln!("skipped: no BTF or no BPF here");
            return;
        };
        let route = |needs: &'static [&'static str]| Route {
            name: "demo",
            programs: &[],
            needs,
            maps: &[],
            hooks: &[],
        };
        // A function every kernel has, and one none has.
        assert_eq!(gaps(&mut k, &route(&["kfunc:vfs_read"])), vec![]);
        assert_eq!(
            gaps(&mut k, &route(&["kfunc:iomon_no_such_function"])),
            vec![Gap::Lacks(
                "no kfunc iomon_no_such_function on this kernel".into()
            )]
        );
    }

    #[test]
    fn every_declared_program_is_in_the_object() {
        let obj = ObjectBuilder::default().open_memory(OBJECT).unwrap();
        let names: Vec<String> = obj
            .progs()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        for f in family::ALL {
            for p in f.schema.all_programs() {
                assert!(
                    names.iter().any(|n| n == p.name),
                    "{} of {} is not in bpf/",
                    p.name,
                    f.name()
                );
            }
        }
        for p in core_programs() {
            assert!(names.iter().any(|n| n == p.name));
        }
        // And nothing in the object that no route loads.
        for n in &names {
            assert!(
                core_programs().iter().any(|p| p.name == n)
                    || family::ALL.iter().any(|f| f
                        .schema
                        .all_programs()
                        .iter()
                        .any(|p| p.name == n)),
                "program {n} belongs to no route"
            );
        }
    }
}
