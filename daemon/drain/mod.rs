//! The only reader of BPF maps. Each tick it reads the per-CPU counter and
//! histogram arrays (which only ever grow) and subtracts the previous read,
//! takes the per-process entries out of the LRU map, and builds one
//! [`Sample`].
//!
//! Nothing is reset in the kernel, so no increment is lost between a read
//! and a reset; per-process entries are taken from a map no program writes
//! to any more (the map flip), so an increment lands either in this tick's
//! copy or in the map the next tick takes. A tick never drops what it
//! read: the previous host-wide read is replaced only together with the
//! Sample it went into, and a failed per-process read still yields the
//! Sample (with the failure counted) and keeps every entry it had taken.

mod files;
mod maps;
mod timeline;

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::abi;
use crate::family::Section;
use crate::hist;
use crate::probes::targets::{self as tgt, Matcher, Resolved};
use crate::probes::Maps;
use crate::sample::{ProcSample, Sample};
use crate::units::{format_duration, now_ms};
pub use maps::{count_entries, decode_proc, read_procs, Batch, InjectedFault, MapError, RawProc};
pub use timeline::{ClockStep, Timeline};

/// How per-process tables are kept. Host totals are right under both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Per-process entries are deleted as they are read, every tick: the map
    /// holds only the processes active in one interval.
    #[default]
    Drain,
    /// Entries stay in the map (bounded by its LRU capacity) and the drain
    /// diffs them against the previous tick. A process evicted by the LRU
    /// loses what it did since the last tick.
    Accumulate,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Drain => "drain",
            Strategy::Accumulate => "accumulate",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "drain" => Some(Strategy::Drain),
            "accumulate" => Some(Strategy::Accumulate),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("failed to switch the per-process map")]
    Flip(#[source] libbpf_rs::Error),
    #[error("failed to count the CPUs the kernel's per-CPU maps have")]
    Cpus(#[source] std::io::Error),
    #[error("failed to set the kernel's targets")]
    Targets(#[source] libbpf_rs::Error),
    #[error("failed to take the targets' per-file numbers")]
    Files(#[source] libbpf_rs::Error),
}

/// `cur - prev` for one process under the accumulate strategy.
fn proc_delta(cur: &RawProc, prev: Option<&RawProc>) -> RawProc {
    match prev {
        None => cur.clone(),
        Some(p) => RawProc {
            tgid: cur.tgid,
            comm: cur.comm.clone(),
            targets: cur.targets,
            v: maps::deltas(&cur.v, &p.v),
        },
    }
}

/// Points a one-slot map-in-map at `inner`.
fn point(
    outer: &libbpf_rs::MapHandle,
    inner: &libbpf_rs::MapHandle,
) -> Result<(), libbpf_rs::Error> {
    use libbpf_rs::{MapCore, MapFlags};
    let fd = inner.as_fd().as_raw_fd() as u32;
    outer.update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
}

/// Whether a process is still running (signal 0: no signal sent).
fn alive(tgid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(tgid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A raw entry as a ProcSample: the families that saw it.
fn to_proc_sample(r: RawProc, layout: &[(&'static str, usize, usize)]) -> ProcSample {
    let mut families = std::collections::BTreeMap::new();
    for (name, base, len) in layout {
        let v = &r.v[(*base).min(r.v.len())..(base + len).min(r.v.len())];
        if v.iter().any(|x| *x != 0) {
            families.insert(name.to_string(), v.to_vec());
        }
    }
    ProcSample {
        tgid: r.tgid,
        comm: r.comm,
        targets: r.targets,
        families,
    }
}

/// Host slot plus every target slot.
const SLOTS: usize = 1 + tgt::SLOTS;

/// One configured target and what became of it.
#[derive(Debug, Clone)]
struct TargetSlot {
    name: String,
    matcher: Matcher,
    resolved: Result<Resolved, String>,
}

/// A target as `iomonctl status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub name: String,
    /// `comm banyand`, `cgroup system.slice/x.service`, `pid 42`.
    pub matches: String,
    /// Why it is not counted now, if it is not (a cgroup that does not
    /// exist yet).
    pub inactive: Option<String>,
}

/// The drain: previous reads, strategy and the per-process diff state.
pub struct Drain {
    maps: Maps,
    ncpus: usize,
    proc_capacity: u32,
    prev_counters: Vec<u64>,
    prev_hists: Vec<u64>,
    prev_procs: HashMap<u32, RawProc>,
    strategy: Strategy,
    /// Which of `maps.procs` the programs write to.
    active: usize,
    last_end_ms: u64,
    timeline: Timeline,
    /// How far the timeline ran ahead of the wall clock at the last tick.
    ahead_ms: u64,
    /// Families attached during the coming interval.
    attached: Vec<&'static str>,
    /// Histograms not measured on this kernel: left out, not zero.
    unmeasured: Vec<(&'static str, usize)>,
    proc_layout: Vec<(&'static str, usize, usize)>,
    fault: Option<InjectedFault>,
    /// The targets, by kernel slot; the ones to apply after the next tick.
    targets: Vec<Option<TargetSlot>>,
    pending_targets: Option<Vec<(String, Matcher)>>,
    targets_gen: u64,
    cgroup_root: Option<std::path::PathBuf>,
    /// Whether this kernel has batch lookups, per kind of map.
    batch_arrays: Batch,
    batch_procs: Batch,
    /// Per-process read failures, and when one was last logged.
    pub proc_read_errors: u64,
    last_error_log: Option<Instant>,
    /// Time the last drain took.
    pub last_duration: Duration,
    /// The per-file map programs write to (0 or 1).
    files_active: usize,
    /// When the set of targets' files was last pruned.
    last_prune: Instant,
    last_files_error: Option<Instant>,
}

impl Drain {
    /// Takes the first read as the baseline: increments from before the
    /// daemon started are not reported.
    pub fn new(
        maps: Maps,
        attached: Vec<&'static str>,
        proc_capacity: u32,
        strategy: Strategy,
    ) -> Result<Drain, DrainError> {
        let ncpus = libbpf_rs::num_possible_cpus()
            .map_err(|e| DrainError::Cpus(std::io::Error::other(e)))?;
        let mut d = Drain {
            maps,
            ncpus,
            proc_capacity,
            prev_counters: Vec::new(),
            prev_hists: Vec::new(),
            prev_procs: HashMap::new(),
            strategy,
            active: 0,
            last_end_ms: now_ms(),
            timeline: Timeline::new(now_ms()),
            ahead_ms: 0,
            attached,
            unmeasured: Vec::new(),
            proc_layout: maps::proc_layout(),
            fault: None,
            targets: vec![None; tgt::SLOTS],
            pending_targets: None,
            targets_gen: 0,
            cgroup_root: tgt::cgroup2_mount(),
            batch_arrays: Batch::Unknown,
            batch_procs: Batch::Unknown,
            proc_read_errors: 0,
            last_error_log: None,
            last_duration: Duration::ZERO,
            files_active: 0,
            last_prune: Instant::now(),
            last_files_error: None,
        };
        let (c, h) = d.read_host()?;
        d.prev_counters = c;
        d.prev_hists = h;
        // Start from empty per-process and per-file maps, writing to the
        // first.
        d.point_at(0)?;
        d.flip_files(0)?;
        let names = d.target_names();
        for i in 0..2 {
            if let (_, Some(e)) = files::take(&d.maps.files[i], &names) {
                return Err(DrainError::Files(e));
            }
        }
        for i in 0..2 {
            let r = read_procs(
                &d.maps.procs[i],
                proc_capacity,
                true,
                None,
                &mut d.batch_procs,
            );
            if let Some(e) = r.error {
                return Err(e.into());
            }
        }
        Ok(d)
    }

    /// Histograms to leave out (not measured on this kernel).
    pub fn with_unmeasured(mut self, hists: Vec<(&'static str, usize)>) -> Drain {
        self.unmeasured = hists;
        self
    }

    /// For tests: make per-process reads fail after `fail_after` batches
    /// of at most `batch` entries, until cleared with `None`.
    #[doc(hidden)]
    pub fn inject_proc_read_fault(&mut self, fault: Option<InjectedFault>) {
        self.fault = fault;
    }

    /// The targets to count for, from the next tick on (the current
    /// interval stays with the targets it started with). At most
    /// [`tgt::SLOTS`]; the rest are ignored (the config refuses more).
    pub fn set_targets(&mut self, targets: Vec<(String, Matcher)>) {
        self.pending_targets = Some(targets);
    }

    /// Applies the targets now (at start: before the first interval).
    pub fn apply_targets_now(&mut self, targets: Vec<(String, Matcher)>) -> Result<(), DrainError> {
        self.pending_targets = Some(targets);
        self.update_targets()
    }

    /// Each target and whether it is counted.
    pub fn target_status(&self) -> Vec<TargetStatus> {
        self.targets
            .iter()
            .flatten()
            .map(|t| TargetStatus {
                name: t.name.clone(),
                matches: match &t.matcher {
                    Matcher::Comm(c) => format!("comm {c}"),
                    Matcher::Cgroup(c) => format!("cgroup {c}"),
                    Matcher::Pid(p) => format!("pid {p}"),
                },
                inactive: t.resolved.as_ref().err().cloned(),
            })
            .collect()
    }

    /// Applies pending targets and looks for inactive cgroups again; writes
    /// the kernel's target map when anything changed.
    fn update_targets(&mut self) -> Result<(), DrainError> {
        let mut changed = false;
        if let Some(list) = self.pending_targets.take() {
            // A target that stays keeps its slot; new ones take free slots.
            let mut next: Vec<Option<TargetSlot>> = vec![None; tgt::SLOTS];
            let mut fresh = Vec::new();
            for (name, matcher) in list {
                match self.targets.iter().position(|t| {
                    t.as_ref()
                        .is_some_and(|t| t.name == name && t.matcher == matcher)
                }) {
                    Some(i) => next[i] = self.targets[i].take(),
                    None => fresh.push((name, matcher)),
                }
            }
            // A slot just given up is taken last: events counted in the
            // moment between the last read and the switch land in the slot's
            // next interval, which should not be a different target's.
            let vacated: Vec<bool> = self.targets.iter().map(Option::is_some).collect();
            for (name, matcher) in fresh {
                let free = |i: &usize| next[*i].is_none();
                let slot = (0..tgt::SLOTS)
                    .filter(free)
                    .find(|i| !vacated[*i])
                    .or_else(|| (0..tgt::SLOTS).find(free));
                if let Some(i) = slot {
                    let resolved = matcher.resolve(self.cgroup_root.as_deref());
                    next[i] = Some(TargetSlot {
                        name,
                        matcher,
                        resolved,
                    });
                }
            }
            changed = true;
            self.targets = next;
        }
        // A cgroup is looked up again every tick: one that did not exist
        // may have been created, and a service's cgroup is a new one (a
        // new id) after each restart.
        for t in self.targets.iter_mut().flatten() {
            if !matches!(t.matcher, Matcher::Cgroup(_)) && t.resolved.is_ok() {
                continue;
            }
            let r = t.matcher.resolve(self.cgroup_root.as_deref());
            if r.as_ref().ok() != t.resolved.as_ref().ok() {
                match (&r, &t.resolved) {
                    (Ok(res), _) => log::info!("target {}: counted as {res:?}", t.name),
                    (Err(e), Ok(_)) => log::info!("target {}: no longer counted: {e}", t.name),
                    _ => {}
                }
                changed = true;
            }
            t.resolved = r;
        }
        if changed {
            use libbpf_rs::{MapCore, MapFlags};
            self.targets_gen += 1;
            let slots: Vec<Option<Resolved>> = self
                .targets
                .iter()
                .map(|t| t.as_ref().and_then(|t| t.resolved.as_ref().ok().copied()))
                .collect();
            self.maps
                .targets
                .update(
                    &0u32.to_ne_bytes(),
                    &tgt::encode(&slots, self.targets_gen),
                    MapFlags::ANY,
                )
                .map_err(DrainError::Targets)?;
        }
        Ok(())
    }

    /// For tests: read maps key by key, as on kernels without batch
    /// lookups.
    #[doc(hidden)]
    pub fn force_key_by_key(&mut self) {
        self.batch_arrays = Batch::No;
        self.batch_procs = Batch::No;
    }

    fn read_host(&mut self) -> Result<(Vec<u64>, Vec<u64>), DrainError> {
        let c = maps::read_percpu_array(
            &self.maps.counters,
            "counters",
            SLOTS * abi::COUNTERS_NR,
            self.ncpus,
            &mut self.batch_arrays,
        )?;
        let h = maps::read_percpu_array(
            &self.maps.hists,
            "hists",
            SLOTS * abi::HISTS_NR * hist::BUCKETS,
            self.ncpus,
            &mut self.batch_arrays,
        )?;
        Ok((c, h))
    }

    /// Makes the programs write to `maps.procs[which]`. The kernel waits
    /// for running BPF programs before a map-in-map update returns, so once
    /// this returns nothing writes to the other map any more.
    fn point_at(&mut self, which: usize) -> Result<(), DrainError> {
        point(&self.maps.procs_active, &self.maps.procs[which]).map_err(DrainError::Flip)?;
        self.active = which;
        Ok(())
    }

    /// The same for the targets' per-file maps.
    fn flip_files(&mut self, which: usize) -> Result<(), DrainError> {
        point(&self.maps.files_active, &self.maps.files[which]).map_err(DrainError::Files)?;
        self.files_active = which;
        Ok(())
    }

    /// Target names by index (the kernel's per-file keys carry the index).
    fn target_names(&self) -> Vec<Option<String>> {
        self.targets
            .iter()
            .map(|t| t.as_ref().map(|t| t.name.clone()))
            .collect()
    }

    /// The targets' files of the interval: the per-file map programs wrote
    /// to is switched and emptied. A failure is logged (once a minute) and
    /// the entries stay for the next tick.
    fn take_files(&mut self) -> Vec<crate::sample::FileSample> {
        if self.last_prune.elapsed() >= Duration::from_secs(60) {
            self.last_prune = Instant::now();
            let before = files::monotonic_ns().saturating_sub(files::FORGET_AFTER_NS);
            files::prune_set(&self.maps.file_set, before);
        }
        let old = self.files_active;
        let (taken, error) = match self.flip_files(1 - old) {
            Ok(()) => {
                let (v, e) = files::take(&self.maps.files[old], &self.target_names());
                (v, e.map(DrainError::Files))
            }
            Err(e) => (Vec::new(), Some(e)),
        };
        if let Some(e) = error {
            if self
                .last_files_error
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
            {
                log::error!(
                    "drain: {}; the targets' per-file numbers not taken now are taken at a later tick",
                    crate::error_chain(&e)
                );
                self.last_files_error = Some(Instant::now());
            }
        }
        taken
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Takes effect at the next tick. Switching from accumulate to drain
    /// keeps the per-process baseline for that one drain, so what was
    /// already reported is not reported again.
    pub fn set_strategy(&mut self, s: Strategy) {
        self.strategy = s;
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Starts the timeline no earlier than `ms` (the newest stored Sample:
    /// after a restart with the wall clock behind it).
    pub fn not_before(&mut self, ms: u64) {
        self.timeline.not_before(ms);
        self.last_end_ms = self.last_end_ms.max(ms);
    }

    /// How far Sample timestamps ran ahead of the wall clock at the last
    /// tick (0 unless the wall clock was set back).
    pub fn ahead_ms(&self) -> u64 {
        self.ahead_ms
    }

    /// Number of per-process entries remembered under `accumulate`.
    pub fn proc_state_len(&self) -> usize {
        self.prev_procs.len()
    }

    /// This interval's per-process entries, and whether reading them
    /// failed (what was taken before the failure is in the list).
    fn take_procs(&mut self) -> (Vec<RawProc>, Option<DrainError>) {
        match self.strategy {
            Strategy::Drain => {
                let old = self.active;
                if let Err(e) = self.point_at(1 - old) {
                    // Programs still write to `old`: its entries are taken
                    // at the next tick.
                    return (Vec::new(), Some(e));
                }
                let r = read_procs(
                    &self.maps.procs[old],
                    self.proc_capacity,
                    true,
                    self.fault,
                    &mut self.batch_procs,
                );
                let taken = if self.prev_procs.is_empty() {
                    r.procs
                } else {
                    // First drain after accumulate: those were cumulative.
                    let prev = std::mem::take(&mut self.prev_procs);
                    r.procs
                        .iter()
                        .map(|p| proc_delta(p, prev.get(&p.tgid)))
                        .collect()
                };
                (taken, r.error.map(DrainError::from))
            }
            Strategy::Accumulate => {
                let r = read_procs(
                    &self.maps.procs[self.active],
                    self.proc_capacity,
                    false,
                    self.fault,
                    &mut self.batch_procs,
                );
                let mut out = Vec::with_capacity(r.procs.len());
                let mut next = HashMap::with_capacity(r.procs.len());
                for p in r.procs {
                    out.push(proc_delta(&p, self.prev_procs.get(&p.tgid)));
                    next.insert(p.tgid, p);
                }
                if r.error.is_some() {
                    // Entries not read keep their baseline.
                    for (k, v) in self.prev_procs.drain() {
                        next.entry(k).or_insert(v);
                    }
                }
                // Processes that exited leave the map (their last numbers
                // were in this delta): it does not evict by itself.
                let gone: Vec<u32> = next.keys().copied().filter(|t| !alive(*t)).collect();
                for t in gone {
                    next.remove(&t);
                    let _ =
                        libbpf_rs::MapCore::delete(&self.maps.procs[self.active], &t.to_ne_bytes());
                }
                // Bounded by the map's capacity: only keys present stay.
                self.prev_procs = next;
                (out, r.error.map(DrainError::from))
            }
        }
    }

    /// One drain: the Sample of the interval that ends now, with every
    /// process taken (the caller adds them all to the totals, then cuts the
    /// Sample to its top-K for the store). An error means
    /// the host-wide maps could not be read: nothing was committed and the
    /// next tick covers this interval too.
    pub fn tick(&mut self) -> Result<Sample, DrainError> {
        let t0 = Instant::now();
        let (counters, hists) = self.read_host()?;
        let (raw, proc_error) = self.take_procs();
        let proc_read_errors = u64::from(proc_error.is_some());
        if let Some(e) = proc_error {
            self.proc_read_errors += 1;
            // One line per minute at most while it keeps failing.
            if self
                .last_error_log
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
            {
                log::error!(
                    "drain: reading the per-process map failed ({}); host-wide numbers are whole, {} processes read before the failure are kept, the rest are counted next tick ({} failures so far)",
                    crate::error_chain(&e),
                    raw.len(),
                    self.proc_read_errors
                );
                self.last_error_log = Some(Instant::now());
            }
        }
        let procs: Vec<ProcSample> = raw
            .into_iter()
            .map(|r| to_proc_sample(r, &self.proc_layout))
            .filter(|p| !p.is_empty())
            .collect();
        let procs_seen = procs.len() as u64;
        let files = self.take_files();

        let dc = maps::deltas(&counters, &self.prev_counters);
        let dh = maps::deltas(&hists, &self.prev_hists);
        let wall = now_ms();
        let (end_ms, step) = self.timeline.now(wall);
        match step {
            Some(ClockStep::Forward(ms)) => log::info!(
                "wall clock jumped ahead by {}; history follows it (a gap of that length)",
                format_duration(Duration::from_millis(ms))
            ),
            Some(ClockStep::Back(ms)) => log::warn!(
                "wall clock went back by {}; history timestamps keep going forward on the monotonic clock, ahead of the wall clock until it catches up",
                format_duration(Duration::from_millis(ms))
            ),
            None => {}
        }
        self.ahead_ms = self.timeline.ahead_ms(wall);
        let mut sample = Sample {
            start_ms: self.last_end_ms,
            end_ms,
            procs,
            procs_seen,
            proc_read_errors,
            files,
            ..Default::default()
        };
        sample.sections = self.sections_of(0, &dc, &dh);
        for (i, t) in self.targets.iter().enumerate() {
            if let Some(t) = t {
                if t.resolved.is_ok() {
                    let mut secs = self.sections_of(1 + i, &dc, &dh);
                    secs.remove("core");
                    sample.targets.insert(t.name.clone(), secs);
                }
            }
        }
        sample.target_slots = self
            .targets
            .iter()
            .map(|t| t.as_ref().map(|t| t.name.clone()).unwrap_or_default())
            .collect();
        // Committed together: the baseline and the Sample it went into.
        self.prev_counters = counters;
        self.prev_hists = hists;
        self.last_end_ms = end_ms;
        // Targets change between intervals, never inside one.
        if let Err(e) = self.update_targets() {
            log::error!("{}", crate::error_chain(&e));
        }
        self.last_duration = t0.elapsed();
        Ok(sample)
    }

    /// The sections of one slot (0: the host) from the interval's deltas.
    fn sections_of(&self, slot: usize, dc: &[u64], dh: &[u64]) -> crate::family::Sections {
        let cbase = slot * abi::COUNTERS_NR;
        let hbase = slot * abi::HISTS_NR * hist::BUCKETS;
        let mut out = crate::family::Sections::new();
        for s in abi::SCHEMAS {
            if s.name != "core" && !self.attached.contains(&s.name) {
                continue;
            }
            let section = Section {
                counters: dc[cbase + s.counter_base..cbase + s.counter_base + s.ncounters].to_vec(),
                hists: (0..s.hists.len())
                    .map(|i| {
                        if self.unmeasured.contains(&(s.name, i)) {
                            return Vec::new();
                        }
                        let b = hbase + (s.hist_base + i) * hist::BUCKETS;
                        dh[b..b + hist::BUCKETS].to_vec()
                    })
                    .collect(),
            };
            out.insert(s.name.to_string(), section);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulate_delta_is_difference() {
        let raw = |v: u64| RawProc {
            tgid: 1,
            comm: "x".into(),
            targets: 0,
            v: vec![v; abi::PROC_NR],
        };
        assert_eq!(proc_delta(&raw(15), Some(&raw(10))).v[0], 5);
        assert_eq!(proc_delta(&raw(15), None).v[0], 15);
    }

    #[test]
    fn proc_samples_keep_only_families_that_saw_the_process() {
        let layout = maps::proc_layout();
        let mut v = vec![0; abi::PROC_NR];
        let reads = abi::READS.proc_base + abi::reads::proc::CALLS;
        v[reads] = 3;
        let p = to_proc_sample(
            RawProc {
                tgid: 7,
                comm: "cat".into(),
                targets: 0,
                v,
            },
            &layout,
        );
        assert_eq!(p.families.len(), 1);
        assert_eq!(p.get("reads", abi::reads::proc::CALLS), 3);
    }
}
