//! The drain's RCU barrier: how it knows no program still writes to the
//! map it is about to empty, without waiting on its event loop.
//!
//! Programs pick the per-process and per-file map they write to by the
//! low bit of a `maps_gen` entry, read once per event. The drain flips
//! that bit with a plain array update, which returns at once; a program
//! that read the old bit just before may still be writing to the old map.
//! Every BPF program runs inside an RCU read-side section (non-sleepable
//! programs: tracepoints, raw and BTF tracepoints, trampolines, kprobes),
//! so once an RCU grace period has passed after the flip, none can still
//! be inside the old map. The kernel offers no asynchronous grace period
//! to user space; it does wait for one before an update of a map-in-map
//! returns (its own selftests use that as a barrier), so the drain
//! updates a one-slot map-in-map no program uses, on a thread of its own,
//! and reads the old maps when that returns. No increment is lost and none
//! lands in an entry being taken: the bound is the kernel's RCU guarantee,
//! not a timing assumption.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

/// The barrier itself: the map-in-map and its inner map.
pub struct Barrier {
    outer: MapHandle,
    inner: MapHandle,
}

impl Barrier {
    /// Owns duplicates of the two handles.
    pub fn new(outer: &MapHandle, inner: &MapHandle) -> Result<Barrier, libbpf_rs::Error> {
        Ok(Barrier {
            outer: MapHandle::try_from(outer)?,
            inner: MapHandle::try_from(inner)?,
        })
    }

    /// Returns once every BPF program that was running when it was called
    /// has finished; how long that took.
    pub fn wait(&self) -> Result<Duration, libbpf_rs::Error> {
        let t = Instant::now();
        let fd = self.inner.as_fd().as_raw_fd() as u32;
        self.outer
            .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)?;
        Ok(t.elapsed())
    }
}

/// The barrier on a thread of its own: `request` returns at once, and the
/// thread calls `notify` when the grace period has passed (the event loop
/// wakes on it and takes the result with `done`). One request at a time.
pub struct BarrierThread {
    requests: Option<Sender<()>>,
    results: Receiver<Result<Duration, String>>,
    handle: Option<JoinHandle<()>>,
    pending: bool,
}

impl BarrierThread {
    pub fn spawn(barrier: Barrier, notify: Box<dyn Fn() + Send>) -> std::io::Result<BarrierThread> {
        let (req_tx, req_rx) = mpsc::channel::<()>();
        let (res_tx, res_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("iomond-barrier".into())
            .spawn(move || {
                // Ends when the event loop drops its sender.
                while req_rx.recv().is_ok() {
                    let r = barrier.wait().map_err(|e| format!("{e:#}"));
                    if res_tx.send(r).is_err() {
                        return;
                    }
                    notify();
                }
            })?;
        Ok(BarrierThread {
            requests: Some(req_tx),
            results: res_rx,
            handle: Some(handle),
            pending: false,
        })
    }

    /// Starts a grace period; false if one is already pending or the
    /// thread is gone.
    pub fn request(&mut self) -> bool {
        if self.pending {
            return false;
        }
        let sent = self.requests.as_ref().is_some_and(|tx| tx.send(()).is_ok());
        self.pending = sent;
        sent
    }

    pub fn pending(&self) -> bool {
        self.pending
    }

    /// The result of the pending request, once it is there.
    pub fn done(&mut self) -> Option<Result<Duration, String>> {
        if !self.pending {
            return None;
        }
        match self.results.try_recv() {
            Ok(r) => {
                self.pending = false;
                Some(r)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.pending = false;
                Some(Err("the barrier thread is gone".into()))
            }
        }
    }

    /// Waits for the pending request, if any.
    pub fn wait(&mut self) -> Option<Result<Duration, String>> {
        if !self.pending {
            return None;
        }
        self.pending = false;
        Some(
            self.results
                .recv()
                .unwrap_or_else(|_| Err("the barrier thread is gone".into())),
        )
    }
}

impl Drop for BarrierThread {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
