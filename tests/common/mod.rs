//! Shared by the kernel and end-to-end tests: gating on BPF, workloads with
//! known numbers, and page residency measured with mincore.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub mod banyand;
pub mod daemon;

static KERNEL: Mutex<()> = Mutex::new(());

/// Where the probes (and iomond) mount tracefs when it is not mounted.
use iomon::probes::TRACEFS;

mod scratch_disk;
#[allow(unused_imports)] // not every test binary uses it
pub use scratch_disk::ScratchDisk;

/// A BPF test's hold on the kernel: the tests that load BPF run one at a
/// time. Loading classic tracepoints mounts tracefs where it is missing (a
/// host without systemd, a guest), in a mount namespace of the loading
/// thread's own (`iomon::probes::ensure_tracefs`): no test changes the
/// host's mounts, and the namespace goes with the test's thread.
/// Declared first in a test, it drops last (after the probes and daemons).
pub struct KernelGuard {
    _lock: MutexGuard<'static, ()>,
}

impl KernelGuard {
    /// Mounts tracefs where it is missing, as systemd does at boot, for
    /// this test's thread and the processes it starts after this: for a
    /// test whose iomond runs without CAP_SYS_ADMIN (which cannot mount
    /// it).
    pub fn mount_tracefs(&self) {
        iomon::probes::ensure_tracefs(Path::new(TRACEFS))
            .unwrap_or_else(|e| panic!("tracefs at {TRACEFS}: {e:?}"));
    }
}

/// Serializes the tests that load BPF (they count this process's own
/// events) and skips them, saying why, where BPF cannot be used. With
/// `IOMON_REQUIRE_BPF=1` (as in CI) a skip is a failure instead.
pub fn bpf_or_skip(test: &str) -> Option<KernelGuard> {
    let guard = KernelGuard {
        _lock: KERNEL.lock().unwrap_or_else(|e| e.into_inner()),
    };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let why = if !root {
        Some("needs root (CAP_BPF, CAP_PERFMON) to load BPF programs".to_string())
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("needs a kernel with BTF (/sys/kernel/btf/vmlinux)".to_string())
    } else {
        None
    };
    match why {
        None => Some(guard),
        Some(why) if std::env::var_os("IOMON_REQUIRE_BPF").is_some() => {
            panic!("{test}: {why}, and IOMON_REQUIRE_BPF is set")
        }
        Some(why) => {
            eprintln!("SKIP {test}: {why}");
            None
        }
    }
}

/// The kernel's page size (4 KiB on x86_64; 4, 16 or 64 KiB on arm64).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize
}

/// Bytes a PMD entry maps: a page table's entries (8 bytes each) times
/// the page size (2 MiB with 4 KiB pages, 32 MiB with 16 KiB).
pub fn pmd_bytes() -> usize {
    page_size() / 8 * page_size()
}

/// A directory on a disk-backed filesystem (page-cache tests cannot use
/// tmpfs: its reads do not go through the page-cache read path), removed
/// when dropped, a failing test's too; `keep` hands it to a new owner.
pub fn disk_dir(name: &str) -> DiskDir {
    let base = std::env::var_os("IOMON_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let dir = base.join(format!("iomon-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create test dir");
    DiskDir(dir)
}

pub struct DiskDir(PathBuf);

impl DiskDir {
    /// The path, no longer removed on drop.
    pub fn keep(mut self) -> PathBuf {
        std::mem::take(&mut self.0)
    }
}

impl std::ops::Deref for DiskDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for DiskDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for DiskDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for DiskDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A file of `size` bytes of non-zero data, written through and synced.
pub fn make_file(path: &Path, size: usize) {
    let mut f = File::create(path).expect("create file");
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 + 1).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).expect("write file");
        left -= n;
    }
    f.sync_all().expect("sync file");
}

pub fn fadvise(fd: i32, offset: i64, len: i64, advice: i32) -> i32 {
    // SAFETY: plain syscall wrapper; fd validity is the kernel's business.
    unsafe { libc::posix_fadvise(fd, offset, len, advice) }
}

/// Evicts the whole file from the page cache.
pub fn evict(f: &File) {
    assert_eq!(fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED), 0);
}

/// A read-only shared mapping of a file, unmapped on drop.
pub struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    pub fn new(f: &File, len: usize) -> Mapping {
        // SAFETY: a fresh mapping chosen by the kernel; failure is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED, "mmap");
        Mapping { addr, len }
    }

    /// Reads the first byte of every page (faulting each in); their sum.
    pub fn touch_pages(&self) -> u64 {
        self.touch_pages_paced(usize::MAX, Duration::ZERO)
    }

    /// The same, pausing `pause` after every `every` pages: a reader at
    /// its own pace, whom read-ahead's I/O has finished for by the time it
    /// gets there.
    pub fn touch_pages_paced(&self, every: usize, pause: Duration) -> u64 {
        let base = self.addr as *const u8;
        let mut sum = 0;
        for (i, off) in (0..self.len).step_by(page_size()).enumerate() {
            if i > 0 && i % every == 0 {
                std::thread::sleep(pause);
            }
            // SAFETY: every offset is inside the mapping.
            sum += unsafe { std::ptr::read_volatile(base.add(off)) } as u64;
        }
        sum
    }

    /// Asks the kernel for huge pages here (MADV_HUGEPAGE): faults read
    /// the file in PMD-sized folios where its file system has large
    /// folios (ext4 from 6.16, XFS from 5.18).
    pub fn advise_huge(&self) {
        // SAFETY: the mapping this struct made.
        let r = unsafe { libc::madvise(self.addr, self.len, libc::MADV_HUGEPAGE) };
        if r != 0 {
            // A kernel without transparent huge pages: the case is a
            // cold one in small folios.
            let e = std::io::Error::last_os_error();
            eprintln!("madvise(MADV_HUGEPAGE): {e}");
        }
    }

    /// KiB of this mapping mapped by PMD entries (`FilePmdMapped` in
    /// /proc/self/smaps; tmpfs's: `ShmemPmdMapped`).
    pub fn pmd_mapped_kib(&self) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let start = format!("{:x}-", self.addr as usize);
        smaps
            .split_inclusive('\n')
            .skip_while(|l| !l.starts_with(&start))
            .skip(1)
            .take_while(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.ends_with(':'))
            })
            .filter_map(|l| {
                l.strip_prefix("FilePmdMapped:")
                    .or_else(|| l.strip_prefix("ShmemPmdMapped:"))
            })
            .filter_map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping this struct made, unmapped once.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// A file of `size` bytes (non-zero) on a tmpfs that caches it in
/// PMD-sized folios (`huge=always`), open for reading and writing; `None`
/// (and why on stderr) where the kernel has no transparent huge pages for
/// tmpfs. The tmpfs is mounted in a mount namespace of a thread's own,
/// which ends with the thread: the host's mounts never change, and the
/// file system goes when the file is closed.
pub fn huge_tmpfs_file(size: usize) -> Option<File> {
    const SHMEM_THP: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
    if !std::path::Path::new(SHMEM_THP).exists() {
        eprintln!("no huge tmpfs here: no {SHMEM_THP} (a kernel without transparent huge pages for tmpfs)");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("iomon-test-{}-huge-tmpfs", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let at = dir.clone();
    let made = std::thread::spawn(move || -> Result<File, String> {
        use nix::mount::{mount, MsFlags};
        iomon::probes::kernel::own_mount_namespace()?;
        let opts = format!("huge=always,size={}", size + (4 << 20));
        mount(
            Some("iomon-test"),
            &at,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| format!("mount -t tmpfs -o {opts}: {e}"))?;
        let path = at.join("data");
        make_file(&path, size);
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))
    })
    .join();
    std::fs::remove_dir(&dir).unwrap();
    Some(
        made.expect("the mounting thread")
            .expect("a huge tmpfs file"),
    )
}

/// How many of the first `size` bytes' pages of the file are resident,
/// from mincore.
pub fn resident_pages(f: &File, size: usize) -> u64 {
    let pages = size.div_ceil(page_size());
    let mut vec = vec![0u8; pages];
    let m = Mapping::new(f, size);
    // SAFETY: the mapping covers `size` bytes; mincore writes one byte per
    // page into vec, which has that many.
    let rc = unsafe { libc::mincore(m.addr, size, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore");
    vec.iter().filter(|b| *b & 1 == 1).count() as u64
}

/// Fraction of the file's pages that are resident, from mincore.
pub fn resident_fraction(f: &File, size: usize) -> f64 {
    resident_pages(f, size) as f64 / size.div_ceil(page_size()) as f64
}

/// Evicts every other `chunk`-aligned chunk of the file (chunks of 2 MiB:
/// folios reach 2 MiB, and DONTNEED drops only folios it covers whole).
pub fn evict_every_other(f: &File, size: usize, chunk: usize) {
    for off in (0..size).step_by(2 * chunk) {
        assert_eq!(
            fadvise(
                f.as_raw_fd(),
                off as i64,
                chunk as i64,
                libc::POSIX_FADV_DONTNEED
            ),
            0
        );
    }
}

/// Reads the first `size` bytes with 1 MiB buffered reads, none past
/// them (on 5.10 a read at the end of a file caches a page beyond it).
pub fn read_exactly(f: &File, size: usize) {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0usize;
    while off < size {
        let want = (size - off).min(buf.len());
        // SAFETY: buf is valid for `want` bytes.
        let n = unsafe { libc::pread(f.as_raw_fd(), buf.as_mut_ptr().cast(), want, off as i64) };
        assert!(n > 0, "pread failed or hit the end early");
        off += n as usize;
    }
}

/// Reads the whole file with `chunk`-byte buffered reads.
pub fn read_all(f: &File, chunk: usize) -> usize {
    let mut buf = vec![0u8; chunk];
    let mut off = 0usize;
    loop {
        // SAFETY: buf is valid for chunk bytes.
        let n = unsafe { libc::pread(f.as_raw_fd(), buf.as_mut_ptr().cast(), chunk, off as i64) };
        assert!(n >= 0, "pread failed");
        if n == 0 {
            return off;
        }
        off += n as usize;
    }
}

/// A child process that waits for a go, then reads `f` whole with 1 MiB
/// `pread`s (no read past the end), advises DONTNEED over it `advise`
/// times and exits: its numbers are exact.
pub struct Worker {
    pub pid: i32,
    go: i32,
}

impl Worker {
    /// Forks the worker; `name` renames it (prctl) before its first event.
    pub fn spawn(name: Option<&std::ffi::CStr>, f: &File, size: usize, advise: usize) -> Worker {
        const CHUNK: usize = 1 << 20;
        assert_eq!(size % CHUNK, 0);
        let mut buf = vec![0u8; CHUNK];
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let fd = f.as_raw_fd();
        // SAFETY: the child makes only syscalls on memory allocated before
        // the fork, then _exits.
        match unsafe { libc::fork() } {
            0 => unsafe {
                let mut b = 0u8;
                libc::close(fds[1]);
                if libc::read(fds[0], (&mut b as *mut u8).cast(), 1) != 1 {
                    libc::_exit(2);
                }
                if let Some(n) = name {
                    libc::prctl(libc::PR_SET_NAME, n.as_ptr());
                }
                for i in 0..size / CHUNK {
                    let n = libc::pread(fd, buf.as_mut_ptr().cast(), CHUNK, (i * CHUNK) as i64);
                    if n != CHUNK as isize {
                        libc::_exit(3);
                    }
                }
                for _ in 0..advise {
                    libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED);
                }
                libc::_exit(0)
            },
            pid if pid > 0 => {
                // SAFETY: our own descriptor, not used again.
                unsafe { libc::close(fds[0]) };
                Worker { pid, go: fds[1] }
            }
            _ => panic!("fork failed"),
        }
    }

    /// Lets it run and waits for it; it must exit 0.
    pub fn run(self) {
        // SAFETY: the write end of our pipe; the child's status is ours.
        unsafe {
            assert_eq!(libc::write(self.go, b"g".as_ptr().cast(), 1), 1);
            libc::close(self.go);
            let mut st = 0;
            assert_eq!(libc::waitpid(self.pid, &mut st, 0), self.pid);
            assert!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "worker failed: status {st:#x}"
            );
        }
    }
}

impl Worker {
    /// Runs it while 300 other processes read `other` (100 at a time).
    pub fn run_among_readers(self, other: &Path) {
        let other = other.to_path_buf();
        let load = std::thread::spawn(move || {
            for _ in 0..3 {
                spawn_cats(100, &other);
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        self.run();
        load.join().unwrap();
    }
}

/// Runs `n` processes at once that each read `path` with `cat`.
pub fn spawn_cats(n: usize, path: &std::path::Path) {
    let batch: Vec<_> = (0..n)
        .map(|_| {
            std::process::Command::new("cat")
                .arg(path)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in batch {
        c.wait().unwrap();
    }
}

/// A 4 KiB-aligned buffer for O_DIRECT.
pub struct Aligned(pub *mut u8);

impl Aligned {
    pub const LEN: usize = 4096;
    pub fn new() -> Aligned {
        let layout = std::alloc::Layout::from_size_align(Self::LEN, Self::LEN).unwrap();
        // SAFETY: a non-zero size; null is checked.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!p.is_null());
        Aligned(p)
    }
    pub fn buf(&mut self) -> &mut [u8] {
        // SAFETY: LEN bytes allocated in new(), owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.0, Self::LEN) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(Self::LEN, Self::LEN).unwrap();
        // SAFETY: allocated in new() with this layout.
        unsafe { std::alloc::dealloc(self.0, layout) }
    }
}

/// PMD-sized folios in the page cache, as /proc/vmstat counts them (file
/// and shmem; in huge pages).
pub fn pmd_folios_cached() -> u64 {
    let text = std::fs::read_to_string("/proc/vmstat").unwrap();
    ["nr_file_hugepages", "nr_shmem_hugepages"]
        .iter()
        .filter_map(|k| {
            text.lines().find_map(|l| {
                l.strip_prefix(k)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .sum()
}
