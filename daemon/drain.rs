//! The only reader of BPF maps. Each tick it reads the per-CPU counter and
//! histogram arrays (which only ever grow) and subtracts the previous read,
//! and takes the per-process entries out of the LRU map, then builds one
//! [`Sample`].
//!
//! Nothing is reset in the kernel, so no increment is lost between a read
//! and a reset; per-process entries are taken with an atomic
//! lookup-and-delete, so an increment lands either in this tick's copy or in
//! a fresh entry that the next tick takes.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::family::{self, Deltas, FamilyId};
use crate::probes::{self, counter, Maps, RawProc, HIST_BUCKETS};
use crate::sample::{top_k, ProcSample, Sample, TopBy};

/// How per-process tables are kept. Host totals are right under both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
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
    #[error("failed to read BPF map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to switch the per-process map")]
    Flip(#[source] libbpf_rs::Error),
    #[error("BPF map {map} returned {got} bytes where {want} were expected")]
    Layout {
        map: &'static str,
        got: usize,
        want: usize,
    },
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
pub fn decode_proc(tgid: u32, bytes: &[u8]) -> Option<ProcSample> {
    if bytes.len() < std::mem::size_of::<RawProc>() {
        return None;
    }
    // SAFETY: the length is checked above and RawProc is plain old data
    // (integers only), valid for any bit pattern; read_unaligned copes with
    // any alignment of the buffer.
    let raw: RawProc = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let comm_bytes: Vec<u8> = raw
        .comm
        .iter()
        .map(|&c| c as u8)
        .take_while(|&c| c != 0)
        .collect();
    Some(ProcSample {
        tgid,
        comm: String::from_utf8_lossy(&comm_bytes).into_owned(),
        fadvise: raw.fadvise,
        read_calls: raw.read_calls,
        read_bytes: raw.read_bytes,
        pc_asked: raw.pc_asked,
        pc_missed: raw.pc_missed,
        mm_asked: raw.mm_asked,
        mm_missed: raw.mm_missed,
        mm_major: raw.mm_major,
        wb_dirtied: raw.wb_dirtied,
        wb_throttles: raw.wb_throttles,
        wb_throttle_ns: raw.wb_throttle_ns,
    })
}

/// `cur - prev` for one process under the accumulate strategy.
fn proc_delta(cur: &ProcSample, prev: Option<&ProcSample>) -> ProcSample {
    let Some(p) = prev else { return cur.clone() };
    let sub = |a: u64, b: u64| if b <= a { a - b } else { a };
    let mut d = cur.clone();
    for (i, row) in d.fadvise.iter_mut().enumerate() {
        row[0] = sub(cur.fadvise[i][0], p.fadvise[i][0]);
        row[1] = sub(cur.fadvise[i][1], p.fadvise[i][1]);
    }
    d.read_calls = sub(cur.read_calls, p.read_calls);
    d.read_bytes = sub(cur.read_bytes, p.read_bytes);
    d.pc_asked = sub(cur.pc_asked, p.pc_asked);
    d.pc_missed = sub(cur.pc_missed, p.pc_missed);
    d.mm_asked = sub(cur.mm_asked, p.mm_asked);
    d.mm_missed = sub(cur.mm_missed, p.mm_missed);
    d.mm_major = sub(cur.mm_major, p.mm_major);
    d.wb_dirtied = sub(cur.wb_dirtied, p.wb_dirtied);
    d.wb_throttles = sub(cur.wb_throttles, p.wb_throttles);
    d.wb_throttle_ns = sub(cur.wb_throttle_ns, p.wb_throttle_ns);
    d
}

fn os_err(ret: i32) -> std::io::Error {
    if ret < 0 {
        std::io::Error::from_raw_os_error(-ret)
    } else {
        std::io::Error::last_os_error()
    }
}

/// Reads every key of a per-CPU array in one batch call.
fn read_percpu_array(
    map: &libbpf_rs::MapHandle,
    name: &'static str,
    nkeys: u32,
    ncpus: usize,
) -> Result<Vec<u64>, DrainError> {
    let mut keys = vec![0u32; nkeys as usize];
    let mut vals = vec![0u8; nkeys as usize * ncpus * 8];
    let mut out_batch = 0u32;
    let mut count = nkeys;
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    // SAFETY: keys and vals hold room for `count` entries of the map's key
    // and per-CPU value sizes; the kernel writes at most that many.
    let ret = unsafe {
        libbpf_sys::bpf_map_lookup_batch(
            map.as_fd().as_raw_fd(),
            std::ptr::null_mut(),
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
            return Err(DrainError::Map {
                map: name,
                source: err,
            });
        }
    }
    if count != nkeys {
        return Err(DrainError::Layout {
            map: name,
            got: count as usize * ncpus * 8,
            want: nkeys as usize * ncpus * 8,
        });
    }
    sum_percpu(&vals, nkeys as usize, ncpus).map_err(|(got, want)| DrainError::Layout {
        map: name,
        got,
        want,
    })
}

/// Takes (or, with `delete == false`, copies) every entry of the per-process
/// map, in batches. Returns the processes and the number of batch calls.
pub fn read_procs(
    map: &libbpf_rs::MapHandle,
    capacity: u32,
    delete: bool,
) -> Result<Vec<ProcSample>, DrainError> {
    let vsize = std::mem::size_of::<RawProc>();
    let batch = capacity.clamp(1, 4096);
    let mut keys = vec![0u32; batch as usize];
    let mut vals = vec![0u8; batch as usize * vsize];
    let mut out = Vec::new();
    let mut in_batch = 0u32;
    let mut out_batch = 0u32;
    let mut first = true;
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    // Bounded: each call returns at least one entry or ends the walk, and the
    // map never holds more than `capacity`; the cap is a safety net against a
    // map refilled as fast as it is drained.
    for _ in 0..(capacity / batch + 2) * 4 {
        let mut count = batch;
        let in_ptr = if first {
            std::ptr::null_mut()
        } else {
            (&mut in_batch as *mut u32).cast()
        };
        // SAFETY: buffers hold `batch` keys and values of the map's sizes.
        let ret = unsafe {
            let f = if delete {
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
        let done = if ret != 0 {
            let err = os_err(ret);
            if err.raw_os_error() != Some(libc::ENOENT) {
                return Err(DrainError::Map {
                    map: "procs",
                    source: err,
                });
            }
            true
        } else {
            false
        };
        for i in 0..count as usize {
            if let Some(p) = decode_proc(keys[i], &vals[i * vsize..(i + 1) * vsize]) {
                out.push(p);
            }
        }
        if done {
            break;
        }
        in_batch = out_batch;
        first = false;
    }
    Ok(out)
}

/// Counts the entries of a map by walking its keys (for the
/// entries-vs-capacity gauges; not on the drain path).
pub fn count_entries(map: &libbpf_rs::MapHandle) -> u64 {
    use libbpf_rs::MapCore;
    map.keys().count() as u64
}

/// Wall-clock step beyond which the timeline notices a jump.
const CLOCK_STEP_MS: u64 = 2_000;

/// What happened to the wall clock, as the timeline saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockStep {
    /// The wall clock jumped ahead by this much: the timeline follows (a
    /// gap in history, as time passed on the wall clock).
    Forward(u64),
    /// The wall clock went back by this much: the timeline does not (it
    /// never goes backwards) and runs ahead of the wall clock until it
    /// catches up.
    Back(u64),
}

/// The times Samples are stamped with: wall-clock milliseconds that never
/// go backwards and advance with the monotonic clock, so intervals keep
/// their true length whatever the wall clock does. A wall clock that jumps
/// ahead is followed; one set back is not (until it catches up).
#[derive(Debug)]
pub struct Timeline {
    anchor_wall: u64,
    anchor_mono: Instant,
    last: u64,
    /// How far ahead of the wall clock it was at the last call.
    gap: u64,
}

impl Timeline {
    pub fn new(wall_ms: u64) -> Timeline {
        Timeline {
            anchor_wall: wall_ms,
            anchor_mono: Instant::now(),
            last: wall_ms,
            gap: 0,
        }
    }

    /// Never earlier than `ms` from now on (the newest stored Sample).
    pub fn not_before(&mut self, ms: u64) {
        if ms > self.now_unchecked() {
            self.anchor_wall = ms;
            self.anchor_mono = Instant::now();
            self.last = self.last.max(ms);
        }
    }

    fn now_unchecked(&self) -> u64 {
        self.anchor_wall + self.anchor_mono.elapsed().as_millis() as u64
    }

    /// The time now, given the wall clock's `wall_ms`, and the step the
    /// wall clock took since the last call, if it took one.
    pub fn now(&mut self, wall_ms: u64) -> (u64, Option<ClockStep>) {
        let mono = self.now_unchecked();
        let mut step = None;
        if wall_ms >= mono {
            if wall_ms > mono + CLOCK_STEP_MS {
                step = Some(ClockStep::Forward(wall_ms - mono));
            }
            // Ahead, or caught up after a step back: follow the wall clock.
            self.anchor_wall = wall_ms;
            self.anchor_mono = Instant::now();
            self.gap = 0;
        } else {
            let gap = mono - wall_ms;
            if gap > self.gap + CLOCK_STEP_MS {
                step = Some(ClockStep::Back(gap - self.gap));
            }
            self.gap = gap;
        }
        let t = self.now_unchecked().max(self.last);
        self.last = t;
        (t, step)
    }

    /// How far the timeline is ahead of the wall clock `wall_ms` (after
    /// the wall clock was set back).
    pub fn ahead_ms(&self, wall_ms: u64) -> u64 {
        self.last.saturating_sub(wall_ms)
    }
}

/// The drain: previous reads, strategy and the per-process diff state.
pub struct Drain {
    maps: Maps,
    ncpus: usize,
    proc_capacity: u32,
    top: usize,
    prev_counters: Vec<u64>,
    prev_hists: Vec<u64>,
    prev_procs: HashMap<u32, ProcSample>,
    strategy: Strategy,
    /// Which of `maps.procs` the programs write to.
    active: usize,
    last_end_ms: u64,
    timeline: Timeline,
    /// How far the timeline ran ahead of the wall clock at the last tick.
    ahead_ms: u64,
    /// Families attached during the coming interval.
    attached: Vec<FamilyId>,
    /// Time the last drain took.
    pub last_duration: Duration,
}

impl Drain {
    /// Takes the first read as the baseline: increments from before the
    /// daemon started are not reported.
    pub fn new(
        maps: Maps,
        attached: Vec<FamilyId>,
        proc_capacity: u32,
        top: usize,
        strategy: Strategy,
    ) -> Result<Drain, DrainError> {
        let ncpus = libbpf_rs::num_possible_cpus().map_err(|e| DrainError::Map {
            map: "counters",
            source: std::io::Error::other(e),
        })?;
        let mut d = Drain {
            maps,
            ncpus,
            proc_capacity,
            top,
            prev_counters: Vec::new(),
            prev_hists: Vec::new(),
            prev_procs: HashMap::new(),
            strategy,
            active: 0,
            last_end_ms: crate::now_ms(),
            timeline: Timeline::new(crate::now_ms()),
            ahead_ms: 0,
            attached,
            last_duration: Duration::ZERO,
        };
        d.prev_counters = read_percpu_array(&d.maps.counters, "counters", counter::NR, ncpus)?;
        d.prev_hists = read_percpu_array(
            &d.maps.hists,
            "hists",
            probes::hist::NR * HIST_BUCKETS as u32,
            ncpus,
        )?;
        // Start from empty per-process maps, writing to the first.
        d.point_at(0)?;
        read_procs(&d.maps.procs[0], proc_capacity, true)?;
        read_procs(&d.maps.procs[1], proc_capacity, true)?;
        Ok(d)
    }

    /// Makes the programs write to `maps.procs[which]`. The kernel waits
    /// for running BPF programs before a map-in-map update returns, so once
    /// this returns nothing writes to the other map any more.
    fn point_at(&mut self, which: usize) -> Result<(), DrainError> {
        use libbpf_rs::{MapCore, MapFlags};
        let fd = self.maps.procs[which].as_fd().as_raw_fd() as u32;
        self.maps
            .procs_active
            .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(DrainError::Flip)?;
        self.active = which;
        Ok(())
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

    /// One drain: the Sample of the interval that ends now.
    pub fn tick(&mut self) -> Result<Sample, DrainError> {
        let t0 = Instant::now();
        let counters = read_percpu_array(&self.maps.counters, "counters", counter::NR, self.ncpus)?;
        let hists = read_percpu_array(
            &self.maps.hists,
            "hists",
            probes::hist::NR * HIST_BUCKETS as u32,
            self.ncpus,
        )?;
        let dc = deltas(&counters, &self.prev_counters);
        let dh = deltas(&hists, &self.prev_hists);
        self.prev_counters = counters;
        self.prev_hists = hists;

        let mut procs = match self.strategy {
            Strategy::Drain => {
                let old = self.active;
                self.point_at(1 - old)?;
                let taken = read_procs(&self.maps.procs[old], self.proc_capacity, true)?;
                if self.prev_procs.is_empty() {
                    taken
                } else {
                    // First drain after accumulate: those were cumulative.
                    let prev = std::mem::take(&mut self.prev_procs);
                    taken
                        .iter()
                        .map(|p| proc_delta(p, prev.get(&p.tgid)))
                        .filter(|d| !d.is_empty())
                        .collect()
                }
            }
            Strategy::Accumulate => {
                let cur = read_procs(&self.maps.procs[self.active], self.proc_capacity, false)?;
                let mut out = Vec::with_capacity(cur.len());
                let mut next = HashMap::with_capacity(cur.len());
                for p in cur {
                    let d = proc_delta(&p, self.prev_procs.get(&p.tgid));
                    next.insert(p.tgid, p);
                    if !d.is_empty() {
                        out.push(d);
                    }
                }
                // Bounded by the map's capacity: only keys present now stay.
                self.prev_procs = next;
                out
            }
        };
        let procs_seen = procs.len() as u64;
        top_k(&mut procs, TopBy::Activity, self.top);

        let d = Deltas {
            counters: &dc,
            hists: &dh,
        };
        let on = |id| self.attached.contains(&id);
        let wall = crate::now_ms();
        let (end_ms, step) = self.timeline.now(wall);
        match step {
            Some(ClockStep::Forward(ms)) => log::info!(
                "wall clock jumped ahead by {}; history follows it (a gap of that length)",
                crate::config::format_duration(Duration::from_millis(ms))
            ),
            Some(ClockStep::Back(ms)) => log::warn!(
                "wall clock went back by {}; history timestamps keep going forward on the monotonic clock, ahead of the wall clock until it catches up",
                crate::config::format_duration(Duration::from_millis(ms))
            ),
            None => {}
        }
        self.ahead_ms = self.timeline.ahead_ms(wall);
        let mut sample = Sample {
            start_ms: self.last_end_ms,
            end_ms,
            procs,
            procs_seen,
            procs_dropped: d.counter(counter::PROC_DROPPED),
            ..Default::default()
        };
        for f in family::ALL.iter().filter(|f| on(f.id)) {
            (f.fill)(&mut sample, &d);
        }
        self.last_end_ms = end_ms;
        self.last_duration = t0.elapsed();
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_never_goes_back_and_follows_forward_steps() {
        let w0 = 1_800_000_000_000;
        let mut t = Timeline::new(w0);
        let (a, step) = t.now(w0 + 5);
        assert!(a >= w0 && step.is_none());
        // Set back an hour: time keeps going forward, the step is reported
        // once.
        let (b, step) = t.now(w0 - 3_600_000);
        assert!(b >= a);
        assert!(matches!(step, Some(ClockStep::Back(ms)) if ms >= 3_590_000));
        let (c, step) = t.now(w0 - 3_599_000);
        assert!(c >= b && step.is_none(), "reported once");
        assert!(t.ahead_ms(w0 - 3_599_000) >= 3_590_000);
        // Forward two hours: followed (a gap).
        let (d, step) = t.now(w0 + 3_600_000);
        assert_eq!(d, w0 + 3_600_000);
        assert!(matches!(step, Some(ClockStep::Forward(_))));
        // Back to true time: not followed.
        let (e, step) = t.now(w0 + 10);
        assert!(e >= d && matches!(step, Some(ClockStep::Back(_))));
        // A restart after that: the store's newest time is the floor.
        let mut r = Timeline::new(w0 + 20);
        r.not_before(e + 1);
        assert!(r.now(w0 + 30).0 > e);
    }

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
        let mut raw = RawProc::default();
        for (i, b) in b"banyand".iter().enumerate() {
            raw.comm[i] = *b as _;
        }
        raw.fadvise[4][1] = 3;
        raw.read_calls = 9;
        raw.pc_missed = 2;
        // SAFETY: viewing a POD struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const RawProc).cast::<u8>(),
                std::mem::size_of::<RawProc>(),
            )
        };
        let p = decode_proc(42, bytes).unwrap();
        assert_eq!(p.tgid, 42);
        assert_eq!(p.comm, "banyand");
        assert_eq!(p.fadvise[4], [0, 3]);
        assert_eq!((p.read_calls, p.pc_missed), (9, 2));
        assert!(
            decode_proc(1, &bytes[..10]).is_none(),
            "short buffer refused"
        );
    }

    #[test]
    fn accumulate_delta_is_difference() {
        let prev = ProcSample {
            tgid: 1,
            read_calls: 10,
            ..Default::default()
        };
        let cur = ProcSample {
            tgid: 1,
            read_calls: 15,
            ..Default::default()
        };
        assert_eq!(proc_delta(&cur, Some(&prev)).read_calls, 5);
        assert_eq!(proc_delta(&cur, None).read_calls, 15);
    }
}
