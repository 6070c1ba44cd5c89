//! How full the BPF hash maps and the daemon's file table are, for the
//! entries-vs-capacity gauges and `process_open_fds`, counted on a thread
//! of its own.
//!
//! The kernel keeps no count of a hash map's entries that user space can
//! read: they are counted by walking the keys, one `bpf()` call each. A
//! full map of threads (16,384 entries) takes milliseconds to walk (the
//! `drain` benchmark's "count" column), and on the event loop every scrape
//! would hold the requests behind it for that long. Counting the open file
//! descriptors (a listing of /proc/self/fd, ~120 entries, most of them BPF
//! objects) took 0.15 ms, a third of a page's render. The thread counts
//! every [`EVERY`] and the loop shows the last count; a map not counted
//! yet is left out of the gauges, never shown as empty.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use libbpf_rs::{MapCore, MapHandle};

use super::maps::count_entries;

/// How often the maps are counted.
pub const EVERY: Duration = Duration::from_secs(10);

/// A map's name, entries at the last count, and capacity.
pub type Count = (String, u64, u64);

/// The last count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    pub maps: Vec<Count>,
    /// This process's open file descriptors; `None`: not counted yet.
    pub open_fds: Option<u64>,
}

/// The daemon's open file descriptors (`None` where /proc is unreadable).
pub fn open_fds() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64)
}

/// The counting thread; stops and is joined when dropped.
pub struct Occupancy {
    last: Arc<Mutex<Counted>>,
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Occupancy {
    /// Counts duplicates of `maps` (by name) now and every `every`.
    pub fn spawn(maps: &[(&str, &MapHandle)], every: Duration) -> std::io::Result<Occupancy> {
        let owned = maps
            .iter()
            .map(|(name, m)| Ok((name.to_string(), MapHandle::try_from(*m)?)))
            .collect::<Result<Vec<_>, libbpf_rs::Error>>()
            .map_err(std::io::Error::other)?;
        let last = Arc::new(Mutex::new(Counted::default()));
        let shared = Arc::clone(&last);
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("iomond-occupancy".into())
            .spawn(move || loop {
                let counted = Counted {
                    maps: owned
                        .iter()
                        .map(|(name, m)| {
                            (name.clone(), count_entries(m), u64::from(m.max_entries()))
                        })
                        .collect(),
                    open_fds: open_fds(),
                };
                *shared.lock().unwrap_or_else(|p| p.into_inner()) = counted;
                // Ends when the owner drops its sender.
                if stopped.recv_timeout(every) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
            })?;
        Ok(Occupancy {
            last,
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// The last count (empty before the first).
    pub fn last(&self) -> Counted {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Occupancy {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libbpf_rs::{MapFlags, MapType};

    #[test]
    fn counts_a_maps_entries_off_the_thread_and_again_later() {
        if nix::unistd::geteuid().as_raw() != 0 {
            eprintln!("skipped: creating a BPF map needs root");
            return;
        }
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let m = MapHandle::create(MapType::Hash, Some("occ_test"), 4, 8, 64, &opts)
            .expect("create a hash map");
        for k in 0u32..5 {
            m.update(&k.to_ne_bytes(), &0u64.to_ne_bytes(), MapFlags::ANY)
                .expect("update");
        }
        let occ = Occupancy::spawn(&[("occ_test", &m)], Duration::from_millis(20)).unwrap();
        let seen = |want: u64| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let last = occ.last();
                if last.maps == vec![("occ_test".to_string(), want, 64)] {
                    // This test's own process: at least its stdio and the map.
                    assert!(last.open_fds.is_some_and(|n| n >= 4), "{last:?}");
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "never counted {want}: {last:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        seen(5);
        for k in 5u32..12 {
            m.update(&k.to_ne_bytes(), &0u64.to_ne_bytes(), MapFlags::ANY)
                .expect("update");
        }
        seen(12);
        drop(occ);
    }
}
