//! The maps' upkeep, on a thread of its own: counting how full the BPF
//! hashes and the daemon's file table are (the entries-vs-capacity gauges,
//! `process_open_fds`), and once a minute forgetting targets' files no
//! target touched for an hour and evicted blocks past the refault window.
//!
//! Each of these walks a map of up to 16,384 entries with a `bpf()` call
//! per key (two per key to prune the file set, one per removed key): the
//! `drain` benchmark's "count" column measured 12.6 ms for 10,000 keys.
//! On the event loop that held every scrape, or every minute a tick, and
//! every request behind it for tens of milliseconds on a busy host (a
//! BanyanDB node's targets touch thousands of files). Counting the open
//! file descriptors (a listing of /proc/self/fd, ~120 entries, most of
//! them BPF objects) took 0.15 ms, a third of a page's render. Counting
//! runs only where `/metrics` is served. The loop shows the last count; a map not counted yet is left out of the gauges,
//! never shown as empty. Removing entries from another thread is what the
//! loop did: the programs never depend on an entry staying.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapHandle};

use super::files;
use super::maps::count_entries;

/// How often the maps are counted, and pruned.
#[derive(Debug, Clone, Copy)]
pub struct Every {
    pub count: Duration,
    pub prune: Duration,
}

/// The daemon's: counted every 10 s, pruned every minute.
pub const EVERY: Every = Every {
    count: Duration::from_secs(10),
    prune: Duration::from_secs(60),
};

/// A map's name, entries at the last count, and capacity.
pub type Count = (String, u64, u64);

/// The last count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    pub maps: Vec<Count>,
    /// This process's open file descriptors; `None`: not counted yet.
    pub open_fds: Option<u64>,
    /// Evicted blocks left at the last expiry; `None`: none yet.
    pub evicted_blocks: Option<u64>,
}

/// The maps to prune: the set of targets' files with how long a file
/// untouched stays ([`files::FORGET_AFTER_NS`]), and the evicted blocks
/// with the refault window (0: refaults not looked for, left alone).
pub struct Prune<'a> {
    pub file_set: &'a MapHandle,
    pub forget_after_ns: u64,
    pub evicted_blocks: &'a MapHandle,
    pub refault_window_ns: u64,
}

/// The daemon's open file descriptors (`None` where /proc is unreadable).
pub fn open_fds() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64)
}

fn dup(m: &MapHandle) -> std::io::Result<MapHandle> {
    MapHandle::try_from(m).map_err(std::io::Error::other)
}

/// The upkeep thread; stops and is joined when dropped.
pub struct Upkeep {
    last: Arc<Mutex<Counted>>,
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Upkeep {
    /// Counts duplicates of `count` (by name) and the open fds now and
    /// every `every.count` (`None`: nothing is counted: no gauges are
    /// served); prunes `prune`'s maps every `every.prune`.
    pub fn spawn(
        count: Option<&[(&str, &MapHandle)]>,
        prune: Prune,
        every: Every,
    ) -> std::io::Result<Upkeep> {
        let counting = count.is_some();
        let owned = count
            .unwrap_or_default()
            .iter()
            .map(|(name, m)| Ok((name.to_string(), dup(m)?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let file_set = dup(prune.file_set)?;
        let evicted = dup(prune.evicted_blocks)?;
        let (window, forget) = (prune.refault_window_ns, prune.forget_after_ns);
        let last = Arc::new(Mutex::new(Counted::default()));
        let shared = Arc::clone(&last);
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("iomond-upkeep".into())
            .spawn(move || {
                let mut last_prune = Instant::now();
                let mut evicted_left = None;
                loop {
                    if last_prune.elapsed() >= every.prune {
                        last_prune = Instant::now();
                        let now = files::monotonic_ns();
                        files::prune_set(&file_set, now.saturating_sub(forget));
                        if window > 0 {
                            let before = now.saturating_sub(window);
                            evicted_left = Some(files::expire_evicted(&evicted, before).0);
                        }
                    }
                    let counted = Counted {
                        maps: owned
                            .iter()
                            .map(|(name, m)| {
                                (name.clone(), count_entries(m), u64::from(m.max_entries()))
                            })
                            .collect(),
                        open_fds: if counting { open_fds() } else { None },
                        evicted_blocks: evicted_left,
                    };
                    *shared.lock().unwrap_or_else(|p| p.into_inner()) = counted;
                    // Ends when the owner drops its sender. Wakes to count
                    // only where something is counted.
                    let to_prune = every.prune.saturating_sub(last_prune.elapsed());
                    let wait = if counting {
                        every.count.min(to_prune)
                    } else {
                        to_prune
                    };
                    if stopped.recv_timeout(wait) != Err(RecvTimeoutError::Timeout) {
                        return;
                    }
                }
            })?;
        Ok(Upkeep {
            last,
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// The last count (empty before the first).
    pub fn last(&self) -> Counted {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Evicted blocks left at the last expiry (`None`: none yet).
    pub fn evicted_blocks(&self) -> Option<u64> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .evicted_blocks
    }
}

impl Drop for Upkeep {
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

    fn hash(name: &str, value_size: u32) -> MapHandle {
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        MapHandle::create(MapType::Hash, Some(name), 4, value_size, 64, &opts)
            .expect("create a hash map")
    }

    /// Waits until the thread's count satisfies `ok`.
    fn until(u: &Upkeep, ok: impl Fn(&Counted) -> bool) -> Counted {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let last = u.last();
            if ok(&last) {
                return last;
            }
            assert!(Instant::now() < deadline, "never: {last:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn counts_off_the_loop_and_prunes_what_is_old() {
        if nix::unistd::geteuid().as_raw() != 0 {
            eprintln!("skipped: creating a BPF map needs root");
            return;
        }
        let counted = hash("upk_counted", 8);
        for k in 0u32..5 {
            counted
                .update(&k.to_ne_bytes(), &0u64.to_ne_bytes(), MapFlags::ANY)
                .expect("update");
        }
        // The file set's values: targets (u32), pad, last_ns (u64); the
        // evicted blocks': when_ns first. Keys 0-2 old (1 ns after boot),
        // 3 an hour from now (never old in this test).
        let (file_set, evicted) = (hash("upk_files", 16), hash("upk_evicted", 16));
        let later = files::monotonic_ns() + 3_600_000_000_000;
        for k in 0u32..4 {
            let when = if k < 3 { 1 } else { later };
            let mut fv = [0u8; 16];
            fv[8..].copy_from_slice(&when.to_ne_bytes());
            file_set
                .update(&k.to_ne_bytes(), &fv, MapFlags::ANY)
                .unwrap();
            let mut ev = [0u8; 16];
            ev[..8].copy_from_slice(&when.to_ne_bytes());
            evicted
                .update(&k.to_ne_bytes(), &ev, MapFlags::ANY)
                .unwrap();
        }
        let every = Every {
            count: Duration::from_millis(20),
            prune: Duration::from_millis(50),
        };
        let prune = Prune {
            file_set: &file_set,
            forget_after_ns: 1_000_000,
            evicted_blocks: &evicted,
            refault_window_ns: 1_000_000,
        };
        let u = Upkeep::spawn(Some(&[("upk_counted", &counted)]), prune, every).unwrap();
        let c = until(&u, |c| c.maps == vec![("upk_counted".to_string(), 5, 64)]);
        // This test's own process: at least its stdio and the maps.
        assert!(c.open_fds.is_some_and(|n| n >= 6), "{c:?}");
        for k in 5u32..12 {
            counted
                .update(&k.to_ne_bytes(), &0u64.to_ne_bytes(), MapFlags::ANY)
                .expect("update");
        }
        until(&u, |c| c.maps[0].1 == 12);
        // After a prune: the recent entry of each is left.
        until(&u, |c| c.evicted_blocks == Some(1));
        assert_eq!(count_entries(&evicted), 1);
        assert_eq!(count_entries(&file_set), 1);
        assert!(evicted
            .lookup(&3u32.to_ne_bytes(), MapFlags::ANY)
            .unwrap()
            .is_some());
        assert!(file_set
            .lookup(&3u32.to_ne_bytes(), MapFlags::ANY)
            .unwrap()
            .is_some());
        drop(u);
    }
}
