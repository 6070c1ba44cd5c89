//! The only reader of BPF maps. Each tick it reads the per-CPU counter and
//! histogram arrays (which only ever grow) and subtracts the previous read,
//! takes the per-process and per-file entries out of the interval maps,
//! and builds one [`Sample`].
//!
//! Nothing is reset in the kernel, so no increment is lost between a read
//! and a reset; per-process entries are taken from a map no program writes
//! to any more (the map flip, then an RCU grace period: see [`barrier`]),
//! so an increment lands either in this tick's copy or in the map the next
//! tick takes. A tick is two steps, [`Drain::begin`] (read the host-wide
//! maps, flip) and [`Drain::finish`] (read what programs left): the event
//! loop waits for the grace period between them on another thread and
//! serves clients meanwhile; [`Drain::tick`] does all three in a row. A
//! tick never drops what it read: the previous host-wide read is replaced
//! only together with the Sample it went into, and a failed per-process
//! read still yields the Sample (with the failure counted) and keeps every
//! entry it had taken.

pub mod barrier;
mod files;
mod maps;
mod rows;
mod targets;
mod timeline;
pub mod upkeep;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::abi;
use crate::family::Section;
use crate::hist;
use crate::probes::targets::{self as tgt, Matcher, Resolved};
use crate::probes::Maps;
use crate::sample::{ProcSample, Sample};
use crate::units::{format_duration, now_ms};
pub use barrier::{Barrier, BarrierThread};
pub use maps::{count_entries, decode_proc, read_procs, Batch, InjectedFault, MapError, RawProc};
pub use timeline::{ClockStep, Timeline};
pub use upkeep::Upkeep;

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
    #[error("failed to switch the per-process and per-file maps")]
    Flip(#[source] libbpf_rs::Error),
    #[error("failed to wait for the programs to leave the old maps: {0}")]
    Barrier(String),
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

/// Whether a process is still running (signal 0: no signal sent).
fn alive(tgid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(tgid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A raw entry as a ProcSample: the families that saw it.
fn to_proc_sample(r: RawProc) -> ProcSample {
    ProcSample {
        tgid: r.tgid,
        comm: r.comm,
        targets: r.targets,
        families: crate::sample::ProcFields::from_flat(r.v),
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

/// A tick between its two steps: the host-wide read, and which maps
/// programs left (`None`: not flipped, or the flip failed).
pub struct Begun {
    counters: Vec<u64>,
    hists: Vec<u64>,
    /// Families' rows, read with the host-wide maps.
    rows: Vec<(usize, rows::Read)>,
    procs_from: Option<usize>,
    files_from: Option<usize>,
    flip_error: Option<libbpf_rs::Error>,
    read: Duration,
}

/// A tick's second step in progress: the maps programs left, read a
/// bounded part per event-loop turn ([`Drain::finish_step`]).
pub struct Finishing {
    begun: Begun,
    switch: Duration,
    files_from: Option<usize>,
    files_error: Option<String>,
    /// The per-process map left by the programs (`None`: not flipped).
    procs_from: Option<usize>,
    /// The walk over it, in steps (drain strategy, batches known to work);
    /// `None` while `one_go` says it is read in one go at the first step.
    reader: Option<maps::ProcReader>,
    one_go: bool,
    read: maps::ProcRead,
    /// What was read, as the Sample's processes (converted as read).
    procs: Vec<ProcSample>,
    /// Why the per-process map was not (wholly) read.
    proc_error: Option<DrainError>,
    /// Time spent in the steps, the longest one and the last one.
    spent: Duration,
    longest: Duration,
    last: Duration,
}

impl Finishing {
    /// The longest the loop spent in one step of it so far.
    pub fn longest_step(&self) -> Duration {
        self.longest
    }

    /// The processes read so far, in the order the Sample will list them.
    pub fn procs(&self) -> &[ProcSample] {
        &self.procs
    }

    /// Work the caller did in the same loop turn as the last step (adding
    /// what it read to the totals): the step counts as that much longer.
    pub fn extend_last_step(&mut self, extra: Duration) {
        self.last += extra;
        self.spent += extra;
        self.longest = self.longest.max(self.last);
    }
}

/// Per-process entries read per call into the kernel when finishing in
/// steps (about 0.1 µs each in the kernel, a few times that to decode).
const STEP_BATCH: u32 = 512;

/// What a tick took, part by part (`iomonctl status`): the switch (the
/// grace period after the flip, waited for off the event loop), reading
/// the maps, appending to the store, publishing the pages, and the
/// longest the event loop went without serving clients for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickParts {
    pub switch_us: u64,
    pub read_us: u64,
    pub store_us: u64,
    pub publish_us: u64,
    pub blocked_us: u64,
}

/// The drain: previous reads, strategy and the per-process diff state.
pub struct Drain {
    maps: Maps,
    ncpus: usize,
    proc_capacity: u32,
    prev_counters: Vec<u64>,
    prev_hists: Vec<u64>,
    prev_procs: HashMap<u32, RawProc>,
    /// The previous read of families' rows.
    rows: rows::Rows,
    strategy: Strategy,
    /// The `maps_gen` entries as last written: per-process, per-file (the
    /// low bit says which map of each pair programs write to).
    gens: [u32; 2],
    /// Waits for programs to leave the maps flipped from (for `tick`; the
    /// event loop waits on a thread of its own).
    barrier: Barrier,
    last_end_ms: u64,
    timeline: Timeline,
    /// How far the timeline ran ahead of the wall clock at the last tick.
    ahead_ms: u64,
    /// Families attached during the coming interval.
    attached: Vec<&'static str>,
    /// Histograms not measured on this kernel: left out, not zero.
    unmeasured: Vec<(&'static str, usize)>,
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
    /// Time the last drain took, and its parts.
    pub last_duration: Duration,
    pub last_parts: TickParts,
    /// When the set of targets' files was last pruned (and old evicted
    /// blocks removed); whether that is done here (false: by the event
    /// loop's [`Upkeep`] thread).
    last_prune: Instant,
    prune_here: bool,
    /// The refault window (0: refaults not looked for), and the evicted
    /// blocks left at the last expiry.
    refault_window_ns: u64,
    pub evicted_blocks: u64,
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
        let barrier = Barrier::new(&maps.barrier, &maps.barrier_inner).map_err(DrainError::Flip)?;
        let mut d = Drain {
            maps,
            ncpus,
            proc_capacity,
            prev_counters: Vec::new(),
            prev_hists: Vec::new(),
            prev_procs: HashMap::new(),
            rows: rows::Rows::default(),
            strategy,
            gens: [0, 0],
            barrier,
            last_end_ms: now_ms(),
            timeline: Timeline::new(now_ms()),
            ahead_ms: 0,
            attached,
            unmeasured: Vec::new(),
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
            last_parts: TickParts::default(),
            last_prune: Instant::now(),
            prune_here: true,
            refault_window_ns: 0,
            evicted_blocks: 0,
            last_files_error: None,
        };
        let all: Vec<usize> = (0..SLOTS).collect();
        let (c, h) = d.read_slots(&all)?;
        d.prev_counters = c;
        d.prev_hists = h;
        // The rows' baseline too.
        let reads: Vec<_> = d
            .maps
            .rows
            .iter()
            .map(|(s, m)| (*s, rows::read(s, m)))
            .collect();
        for (s, read) in reads {
            let kind = s.rows.as_ref().map_or("", |r| r.key);
            d.rows.sections(s, read, None, |k| rows::name(kind, k), &[]);
        }
        // Start from empty per-process and per-file maps, writing to the
        // first (the maps are new: no program can be in them yet).
        d.write_gens().map_err(DrainError::Flip)?;
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

    /// The refault window the programs were loaded with: blocks of
    /// evicted pages older than it are removed once a minute.
    pub fn with_refault_window(mut self, ns: u64) -> Drain {
        self.refault_window_ns = ns;
        self
    }

    /// What an [`Upkeep`] thread would prune in this drain's place: the
    /// file set and the evicted blocks, with its refault window (see
    /// [`Drain::pruned_elsewhere`]).
    pub fn prune(&self) -> upkeep::Prune<'_> {
        upkeep::Prune {
            file_set: &self.maps.file_set,
            forget_after_ns: files::FORGET_AFTER_NS,
            evicted_blocks: &self.maps.evicted_blocks,
            refault_window_ns: self.refault_window_ns,
        }
    }

    /// An [`Upkeep`] thread prunes from now on: ticks no longer do.
    pub fn pruned_elsewhere(&mut self) {
        self.prune_here = false;
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

    /// For tests: read maps key by key, as on kernels without batch
    /// lookups.
    #[doc(hidden)]
    pub fn force_key_by_key(&mut self) {
        self.batch_arrays = Batch::No;
        self.batch_procs = Batch::No;
    }

    /// The counters' slots in use: the host's and each counted target's
    /// (reading an array costs per key: unused target slots are not read).
    fn active_slots(&self) -> Vec<usize> {
        let mut v = vec![0];
        for (i, t) in self.targets.iter().enumerate() {
            if t.as_ref().is_some_and(|t| t.resolved.is_ok()) {
                v.push(1 + i);
            }
        }
        v
    }

    /// The host-wide maps: every slot in `slots` read, the others as they
    /// were last read (so their deltas are 0).
    fn read_slots(&mut self, slots: &[usize]) -> Result<(Vec<u64>, Vec<u64>), DrainError> {
        let (cn, hn) = (abi::COUNTERS_NR, abi::HISTS_NR * hist::BUCKETS);
        let mut c = self.prev_counters.clone();
        c.resize(SLOTS * cn, 0);
        let mut h = self.prev_hists.clone();
        h.resize(SLOTS * hn, 0);
        for &slot in slots {
            let v = maps::read_percpu_array_range(
                &self.maps.counters,
                "counters",
                slot * cn,
                cn,
                self.ncpus,
                &mut self.batch_arrays,
            )?;
            c[slot * cn..(slot + 1) * cn].copy_from_slice(&v);
            let v = maps::read_percpu_array_range(
                &self.maps.hists,
                "hists",
                slot * hn,
                hn,
                self.ncpus,
                &mut self.batch_arrays,
            )?;
            h[slot * hn..(slot + 1) * hn].copy_from_slice(&v);
        }
        Ok((c, h))
    }

    fn read_host(&mut self) -> Result<(Vec<u64>, Vec<u64>), DrainError> {
        let slots = self.active_slots();
        self.read_slots(&slots)
    }

    /// Writes both `maps_gen` entries: from the next event on, programs
    /// write to the maps they name. Returns at once; programs already
    /// running may still write to the old ones until an RCU grace period
    /// has passed (see [`barrier`]).
    fn write_gens(&self) -> Result<(), libbpf_rs::Error> {
        use libbpf_rs::{MapCore, MapFlags};
        for (i, g) in self.gens.iter().enumerate() {
            self.maps.maps_gen.update(
                &(i as u32).to_ne_bytes(),
                &g.to_ne_bytes(),
                MapFlags::ANY,
            )?;
        }
        Ok(())
    }

    /// The per-process map programs write to.
    fn procs_slot(&self) -> usize {
        (self.gens[0] & 1) as usize
    }

    fn files_slot(&self) -> usize {
        (self.gens[1] & 1) as usize
    }

    /// Target names by index (the kernel's per-file keys carry the index).
    fn target_names(&self) -> Vec<Option<String>> {
        self.targets
            .iter()
            .map(|t| t.as_ref().map(|t| t.name.clone()))
            .collect()
    }

    /// The targets' files of the interval: the per-file map programs left
    /// at [`Drain::begin`] (`from`, `None` when the flip failed), emptied.
    /// A failure is logged (once a minute) and the entries stay for the
    /// next tick.
    fn take_files(
        &mut self,
        from: Option<usize>,
        flip_error: Option<&str>,
    ) -> Vec<crate::sample::FileSample> {
        if self.prune_here && self.last_prune.elapsed() >= Duration::from_secs(60) {
            self.last_prune = Instant::now();
            let now = files::monotonic_ns();
            files::prune_set(
                &self.maps.file_set,
                now.saturating_sub(files::FORGET_AFTER_NS),
            );
            if self.refault_window_ns > 0 {
                let before = now.saturating_sub(self.refault_window_ns);
                self.evicted_blocks = files::expire_evicted(&self.maps.evicted_blocks, before).0;
            }
        }
        let (taken, error) = match from {
            Some(old) => {
                let (v, e) = files::take(&self.maps.files[old], &self.target_names());
                (v, e.map(|e| crate::error_chain(&DrainError::Files(e))))
            }
            None => (Vec::new(), flip_error.map(str::to_string)),
        };
        if let Some(e) = error {
            if self
                .last_files_error
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
            {
                log::error!(
                    "drain: {e}; the targets' per-file numbers not taken now are taken at a later tick"
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
    /// failed (what was taken before the failure is in the list). `from`:
    /// the map programs left at [`Drain::begin`] (drain strategy; `None`
    /// when the flip failed: its entries are taken at the next tick).
    fn take_procs(
        &mut self,
        from: Option<usize>,
        flip_error: Option<DrainError>,
    ) -> (Vec<RawProc>, Option<DrainError>) {
        match self.strategy {
            Strategy::Drain => {
                let Some(old) = from else {
                    return (Vec::new(), flip_error);
                };
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
                let active = self.procs_slot();
                let r = read_procs(
                    &self.maps.procs[active],
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
                    let _ = libbpf_rs::MapCore::delete(&self.maps.procs[active], &t.to_ne_bytes());
                }
                // Bounded by the map's capacity: only keys present stay.
                self.prev_procs = next;
                (out, r.error.map(DrainError::from))
            }
        }
    }

    /// The first step of a tick: reads the host-wide maps and flips the
    /// interval maps (the per-process pair only under the drain strategy;
    /// the per-file pair always). Returns at once: before
    /// [`Drain::finish`] reads what programs left, an RCU grace period
    /// must pass ([`Barrier::wait`], or a [`BarrierThread`]). An error
    /// means the host-wide maps could not be read: nothing was committed
    /// and the next tick covers this interval too.
    pub fn begin(&mut self) -> Result<Begun, DrainError> {
        let t0 = Instant::now();
        let (counters, hists) = self.read_host()?;
        let rows = self
            .maps
            .rows
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| self.attached.contains(&s.name))
            .map(|(i, (s, m))| (i, rows::read(s, m)))
            .collect();
        let (procs_from, files_from) = (self.procs_slot(), self.files_slot());
        let flip_procs = self.strategy == Strategy::Drain;
        let prev = self.gens;
        if flip_procs {
            self.gens[0] = self.gens[0].wrapping_add(1);
        }
        self.gens[1] = self.gens[1].wrapping_add(1);
        let flipped = self.write_gens();
        let (procs_from, files_from, flip_error) = match flipped {
            Ok(()) => (flip_procs.then_some(procs_from), Some(files_from), None),
            Err(e) => {
                // Programs may write to either map now: put the old
                // generations back (a second failure changes nothing) and
                // take both pairs at a later tick.
                self.gens = prev;
                let _ = self.write_gens();
                (None, None, Some(e))
            }
        };
        Ok(Begun {
            counters,
            hists,
            rows,
            procs_from,
            files_from,
            flip_error,
            read: t0.elapsed(),
        })
    }

    /// Waits, on this thread, for programs to leave the maps flipped from.
    pub fn wait_barrier(&self) -> Result<Duration, DrainError> {
        self.barrier
            .wait()
            .map_err(|e| DrainError::Barrier(format!("{e:#}")))
    }

    /// Waits for the grace period after [`Drain::begin`] on this thread,
    /// then finishes the tick: the Sample of the interval that ends now.
    pub fn tick(&mut self) -> Result<Sample, DrainError> {
        let b = self.begin()?;
        let waited = self.wait_barrier();
        Ok(self.finish(b, waited))
    }

    /// The second step of a tick, once the grace period after
    /// [`Drain::begin`] has passed (`waited`: how long it took, or why it
    /// failed), in one go: the Sample of the interval that ends now, with
    /// every process taken (the caller adds them all to the totals, then
    /// cuts the Sample to its top-K for the store). Without a grace period
    /// the maps left are not read (their entries are taken at a later
    /// tick, and the failure is counted).
    pub fn finish(&mut self, b: Begun, waited: Result<Duration, DrainError>) -> Sample {
        let mut f = self.finish_begin(b, waited);
        while !self.finish_step(&mut f, Duration::MAX) {}
        self.finish_end(f)
    }

    /// [`Drain::finish`] in steps: this starts it, [`Drain::finish_step`]
    /// reads a bounded part at a time, [`Drain::finish_end`] makes the
    /// Sample.
    pub fn finish_begin(
        &mut self,
        mut b: Begun,
        waited: Result<Duration, DrainError>,
    ) -> Finishing {
        let switch = match &waited {
            Ok(d) => *d,
            Err(_) => Duration::ZERO,
        };
        let (procs_from, files_from, flip_error) = match waited {
            Ok(_) => (
                b.procs_from,
                b.files_from,
                b.flip_error.take().map(DrainError::Flip),
            ),
            Err(e) => {
                // Not safe to read now. Their entries are not lost: the
                // next flip sends programs back into them, and they are
                // taken, with that interval's, after its grace period.
                (None, None, Some(e))
            }
        };
        let files_error = flip_error.as_ref().map(|e| crate::error_chain(e));
        let mut f = Finishing {
            begun: b,
            switch,
            files_from,
            files_error,
            procs_from,
            reader: None,
            one_go: false,
            read: maps::ProcRead::default(),
            procs: Vec::new(),
            proc_error: None,
            spent: Duration::ZERO,
            longest: Duration::ZERO,
            last: Duration::ZERO,
        };
        let stepped = self.strategy == Strategy::Drain
            && procs_from.is_some()
            && self.prev_procs.is_empty()
            && self.batch_procs == Batch::Yes;
        if stepped {
            f.reader = Some(maps::ProcReader::new(
                self.proc_capacity,
                true,
                self.fault,
                STEP_BATCH,
            ));
        } else {
            // Read in one go at the first step (key by key, the first
            // read that learns whether batches work, the accumulate
            // strategy, the first drain after it).
            f.proc_error = flip_error;
            f.one_go = true;
        }
        f
    }

    /// Reads for about `budget` (at least one batch); whether everything
    /// the tick needs is read.
    pub fn finish_step(&mut self, f: &mut Finishing, budget: Duration) -> bool {
        let t = Instant::now();
        let done = match (f.reader.as_mut(), f.procs_from) {
            (Some(r), Some(from)) => {
                let map = &self.maps.procs[from];
                let mut done = false;
                while !done && t.elapsed() < budget {
                    done = r.step(map, &mut f.read, 1);
                }
                done
            }
            _ => {
                if std::mem::take(&mut f.one_go) {
                    let err = f.proc_error.take();
                    let (raw, e) = self.take_procs(f.procs_from, err);
                    f.read.procs = raw;
                    f.proc_error = e;
                }
                true
            }
        };
        f.procs.extend(
            f.read
                .procs
                .drain(..)
                .map(to_proc_sample)
                .filter(|p| !p.is_empty()),
        );
        if done {
            if let Some(e) = f.read.error.take() {
                f.proc_error = Some(e.into());
            }
            f.reader = None;
        }
        let d = t.elapsed();
        f.spent += d;
        f.longest = f.longest.max(d);
        f.last = d;
        done
    }

    /// The Sample of the interval that ends now, once
    /// [`Drain::finish_step`] said everything is read.
    pub fn finish_end(&mut self, f: Finishing) -> Sample {
        let t1 = Instant::now();
        let Finishing {
            begun,
            switch,
            files_from,
            files_error,
            procs,
            proc_error,
            spent,
            longest,
            ..
        } = f;
        let Begun {
            counters,
            hists,
            rows: rows_read,
            read: host_read,
            ..
        } = begun;
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
                    procs.len(),
                    self.proc_read_errors
                );
                self.last_error_log = Some(Instant::now());
            }
        }
        let procs_seen = procs.len() as u64;
        let files = self.take_files(files_from, files_error.as_deref());

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
        for (i, read) in rows_read {
            let (schema, map) = (self.maps.rows[i].0, &self.maps.rows[i].1);
            let kind = schema.rows.as_ref().map_or("", |r| r.key);
            let secs = self.rows.sections(
                schema,
                read,
                Some(map),
                |k| rows::name(kind, k),
                &self.unmeasured,
            );
            if !secs.is_empty() {
                sample.rows.insert(schema.name.to_string(), secs);
            }
        }
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
        let end = t1.elapsed();
        let read = host_read + spent + end;
        self.last_parts = TickParts {
            switch_us: switch.as_micros() as u64,
            read_us: read.as_micros() as u64,
            blocked_us: longest.max(end).as_micros() as u64,
            ..Default::default()
        };
        self.last_duration = read;
        sample
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
        let mut v = vec![0; abi::PROC_NR];
        let reads = abi::READS.proc_base + abi::reads::proc::CALLS;
        v[reads] = 3;
        let p = to_proc_sample(RawProc {
            tgid: 7,
            comm: "cat".into(),
            targets: 0,
            v,
        });
        assert_eq!(p.families.len(), 1);
        assert_eq!(p.get("reads", abi::reads::proc::CALLS), 3);
    }
}
