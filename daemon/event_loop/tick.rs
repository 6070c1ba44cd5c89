//! A tick as the event loop lives it: begun (the host-wide read and the
//! flip), finished a bounded step per loop turn once the grace period has
//! passed, then completed (the totals, the store, the pages).

use std::time::{Duration, Instant};

use super::{notify, tick_line, Daemon};
use crate::drain::BarrierThread;

/// Reading per loop turn while a tick finishes (and adding what was read
/// to the totals): a request that meets a tick waits about this long, not
/// for the whole tick.
const FINISH_STEP: Duration = Duration::from_millis(1);

impl Daemon {
    /// A whole tick on this thread (the final drain).
    pub(super) fn tick(&mut self) {
        let t = Instant::now();
        match self.drain.tick() {
            Ok(s) => self.complete_tick(s, t),
            Err(e) => log::error!("drain failed: {}", crate::error_chain(&e)),
        }
    }

    /// The first step of a tick; the second comes when the barrier thread
    /// wakes the loop (or at once, without one).
    pub(super) fn begin_tick(&mut self) {
        let t = Instant::now();
        let b = match self.drain.begin() {
            Ok(b) => b,
            Err(e) => {
                log::error!("drain failed: {}", crate::error_chain(&e));
                return;
            }
        };
        if self.barrier.as_mut().is_some_and(BarrierThread::request) {
            self.begun = Some(b);
            self.begin_blocked = t.elapsed();
        } else {
            let waited = self.drain.wait_barrier();
            let sample = self.drain.finish(b, waited);
            self.complete_tick(sample, t);
        }
    }

    /// Goes on with the tick past its grace period: a bounded part of it
    /// per loop turn (about [`FINISH_STEP`] of reading; the Sample, the
    /// totals and the store in the last). Whether it did anything.
    pub(super) fn finish_tick_if_ready(&mut self) -> bool {
        if self.finishing.is_none() {
            let Some(r) = self.barrier.as_mut().and_then(BarrierThread::done) else {
                return false;
            };
            let Some(b) = self.begun.take() else {
                return false;
            };
            let waited = r.map_err(crate::drain::DrainError::Barrier);
            self.finishing = Some(self.drain.finish_begin(b, waited));
        }
        let Some(mut f) = self.finishing.take() else {
            return false;
        };
        let done = self.drain.finish_step(&mut f, FINISH_STEP);
        // What this step read goes to the totals now, not all in the
        // tick's last turn (and the turn is that much longer).
        let t = Instant::now();
        self.totals.add_read(f.procs());
        f.extend_last_step(t.elapsed());
        if !done {
            self.finishing = Some(f);
            return true;
        }
        let longest = f.longest_step();
        let t = Instant::now();
        let sample = self.drain.finish_end(f);
        self.complete_tick(sample, t);
        let parts = &mut self.drain.last_parts;
        parts.blocked_us = parts.blocked_us.max(longest.as_micros() as u64);
        true
    }

    /// Waits for the pending grace period on this thread (shutting down).
    pub(super) fn wait_barrier(&mut self) -> Result<Duration, crate::drain::DrainError> {
        match self.barrier.as_mut().and_then(BarrierThread::wait) {
            Some(r) => r.map_err(crate::drain::DrainError::Barrier),
            None => self.drain.wait_barrier(),
        }
    }

    /// What a tick's Sample goes to: the totals, the store, the pages.
    /// `since`: when the loop last started on this tick without serving
    /// clients in between.
    pub(super) fn complete_tick(&mut self, mut sample: crate::sample::Sample, since: Instant) {
        self.last_tick = Some(Instant::now());
        // The targets' files are named from their processes' open files
        // (all of the tick's, before any cut) or the data directories.
        let pids: Vec<u32> = sample
            .procs
            .iter()
            .filter(|p| p.targets != 0)
            .map(|p| p.tgid)
            .collect();
        self.file_paths.learn_processes(&pids);
        sample.files_unresolved = self.file_paths.resolve(&mut sample.files, &pids);
        // The BanyanDB view: every file of the tick, before the cut; the
        // memory cgroups of its processes and the host's.
        sample.banyandb = crate::banyandb::rows(
            sample
                .files
                .iter()
                .map(|f| (f.target.as_str(), f.kind.as_ref(), f.pages.as_slice())),
        );
        let mut cgroups: Vec<String> = Vec::new();
        for (pid, percent, bytes) in self.file_paths.banyandb_processes() {
            let Some(cg) = crate::banyandb::memcg::cgroup_of(std::path::Path::new("/proc"), pid)
            else {
                continue;
            };
            let cg_name = cg.name();
            if cgroups.contains(&cg_name) {
                continue;
            }
            if let Some(m) = self.memcg.cgroup(&cg, percent, bytes) {
                sample.memcg.push(m);
            }
            cgroups.push(cg_name);
            if cgroups.len() >= crate::banyandb::memcg::MAX_CGROUPS {
                break;
            }
        }
        self.memcg.keep_only(&cgroups);
        // /proc/vmstat once a tick: the host's file cache, and the sign of
        // a program on demand that waits on its items.
        let vmstat = self.memcg.read_vmstat();
        sample.host_mem = vmstat.as_deref().map(|t| self.memcg.host_from(t));
        // A program attached on demand, where this tick showed its sign.
        for (level, line) in self.probes.attach_wanted_given(&sample, vmstat.as_deref()) {
            log::log!(level, "{line}");
        }
        // Every process counts in the totals; the Sample keeps its top-K
        // (and every target's process) for the store and the views, and
        // each target's top files.
        self.totals.add(&sample);
        sample.cut_procs(self.cfg.daemon.top_k);
        sample.cut_files(self.cfg.files.top);
        self.totals.set_last(&sample);
        let t = Instant::now();
        if let Some(st) = &mut self.store {
            st.append(&sample);
        }
        self.serve_exporter();
        self.drain.last_parts.store_us = t.elapsed().as_micros() as u64;
        self.publish();
        let parts = &mut self.drain.last_parts;
        parts.publish_us = 0;
        parts.blocked_us = since.elapsed().max(self.begin_blocked).as_micros() as u64;
        self.begin_blocked = Duration::ZERO;
        if self.startup.tick_lines {
            println!("{}", tick_line(&sample, &self.drain.last_parts));
        }
        if self.startup.systemd && self.totals.ticks % 6 == 1 {
            notify(true, &[sd_notify::NotifyState::Status(&self.status_line())]);
        }
        let now = Instant::now();
        if self.missed.due(now) {
            for line in self.missed.observe(now, &self.probes.missed_runs()) {
                log::warn!("{line}");
            }
        }
    }
}
