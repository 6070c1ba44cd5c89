//! A block device only a test or a benchmark uses: a loop device it
//! attaches itself, or the one `IOMON_TEST_BLOCK_DEV` names. Shared by
//! the tests (`tests/common`) and the probes benchmark (`#[path]`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A block device only this test uses: `IOMON_TEST_BLOCK_DEV` where set
/// (the kernel matrix's guests set up a loop device), else a loop device
/// over a 64 MiB file in /dev/shm, detached on drop.
pub struct ScratchDisk {
    pub path: PathBuf,
    /// Its name in /sys/block.
    pub name: String,
    backing: Option<PathBuf>,
    /// The loop device's number, where attaching it made the device (no
    /// free one existed): removed on drop, so that runs leave no devices.
    made: Option<u32>,
}

impl ScratchDisk {
    pub fn new() -> ScratchDisk {
        if let Some(p) = std::env::var_os("IOMON_TEST_BLOCK_DEV") {
            let path = PathBuf::from(p);
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            return ScratchDisk {
                path,
                name,
                backing: None,
                made: None,
            };
        }
        ScratchDisk::loop_device(64 << 20)
    }

    /// A loop device over a file of `bytes` (in /dev/shm), whatever
    /// `IOMON_TEST_BLOCK_DEV` says (tests that need many devices).
    pub fn loop_device(bytes: u64) -> ScratchDisk {
        // Memory-backed where the system has /dev/shm (the guests of the
        // kernel matrix may not: their /tmp).
        let dir = Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        ScratchDisk::loop_device_in(&dir, bytes)
    }

    /// A loop device over a file of `bytes` in `dir`.
    pub fn loop_device_in(dir: &Path, bytes: u64) -> ScratchDisk {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let backing = dir.join(format!("iomon-test-{}-{n}.img", std::process::id()));
        File::create(&backing)
            .and_then(|f| f.set_len(bytes))
            .unwrap_or_else(|e| panic!("a file in {} for the loop device: {e}", dir.display()));
        let (path, made) = match attach_loop(&backing) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(&backing);
                panic!(
                    "no block device for the test: a loop device over {} failed ({e}); set IOMON_TEST_BLOCK_DEV to a device only it may use",
                    backing.display()
                );
            }
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        ScratchDisk {
            path,
            name,
            backing: Some(backing),
            made,
        }
    }

    /// The device opened for direct I/O (O_DIRECT), for reading, and for
    /// writing too if `write`.
    pub fn open_direct(&self, write: bool) -> File {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_DIRECT)
            .open(&self.path)
            .unwrap_or_else(|e| panic!("{}: {e}", self.path.display()))
    }

    /// A loop device of this test's: makes it read and write its file
    /// with direct I/O (`losetup --direct-io=on`). Err where the file's
    /// filesystem has no direct I/O (tmpfs before 6.6) or the device is
    /// not this test's own loop device.
    pub fn loop_direct_io(&self) -> std::io::Result<()> {
        if self.backing.is_none() {
            return Err(std::io::Error::other("not a loop device of this test's"));
        }
        let dev = File::open(&self.path)?;
        // SAFETY: LOOP_SET_DIRECT_IO takes an unsigned long, by value.
        let r =
            unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_DIRECT_IO as _, 1 as libc::c_ulong) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// A loop device of this test's: its file cut to `len` bytes under it
    /// (the device keeps its size: reads past the file's end come back
    /// short).
    pub fn truncate_backing(&self, len: u64) {
        let b = self.backing.as_ref().expect("a loop device of this test's");
        File::options()
            .write(true)
            .open(b)
            .and_then(|f| f.set_len(len))
            .unwrap_or_else(|e| panic!("{}: {e}", b.display()));
    }

    /// `/sys/block/<name>/stat`: reads, reads merged, sectors read, ms
    /// reading, writes, writes merged, sectors written, ...
    pub fn stat(&self) -> Vec<u64> {
        std::fs::read_to_string(format!("/sys/block/{}/stat", self.name))
            .expect("the device's stat")
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    }
}

/// From linux/loop.h.
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_DIRECT_IO: libc::c_ulong = 0x4C08;
const LOOP_CTL_REMOVE: libc::c_ulong = 0x4C81;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

/// The loop devices that exist now, by number.
fn loop_devices() -> Vec<u32> {
    std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("loop")?.parse().ok())
        .collect()
}

/// Attaches `file` to a free loop device, as `losetup --find` does (no
/// util-linux needed: the guests have busybox's); and the device's number
/// if none was free and the kernel made it for this.
fn attach_loop(file: &Path) -> std::io::Result<(PathBuf, Option<u32>)> {
    let ctl = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    let backing = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)?;
    // Another process may take the free device first: ask again.
    let mut last = std::io::Error::other("no free loop device");
    for _ in 0..20 {
        let before = loop_devices();
        // SAFETY: LOOP_CTL_GET_FREE takes no argument.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let made = (!before.contains(&(n as u32))).then_some(n as u32);
        let path = PathBuf::from(format!("/dev/loop{n}"));
        // devtmpfs creates the node; give it a moment.
        let mut dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path);
        for _ in 0..50 {
            if dev.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            dev = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path);
        }
        let dev = dev?;
        // SAFETY: LOOP_SET_FD takes a file descriptor, open for the call.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) };
        if r == 0 {
            return Ok((path, made));
        }
        last = std::io::Error::last_os_error();
        if last.raw_os_error() != Some(libc::EBUSY) {
            return Err(last);
        }
    }
    Err(last)
}

impl Drop for ScratchDisk {
    fn drop(&mut self) {
        if let Some(b) = &self.backing {
            if let Ok(dev) = File::open(&self.path) {
                // SAFETY: LOOP_CLR_FD takes no argument.
                unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _) };
            }
            let _ = std::fs::remove_file(b);
        }
        if let Some(n) = self.made {
            remove_loop(n);
        }
    }
}

/// Removes loop device `n`, made for a test: once its detach, which the
/// kernel finishes at its last close, is done (EBUSY until then). Best
/// effort: a device still held elsewhere stays.
fn remove_loop(n: u32) {
    let Ok(ctl) = File::open("/dev/loop-control") else {
        return;
    };
    for _ in 0..100 {
        // SAFETY: LOOP_CTL_REMOVE takes the device's number, by value.
        let r = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_REMOVE as _, n as libc::c_ulong) };
        if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EBUSY) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
