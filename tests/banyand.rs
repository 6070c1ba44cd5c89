//! `banyand`: a BanyanDB-shaped workload for iomon's tests, written here
//! from BanyanDB's documented behaviour (../shared/BANYANDB.md), not from
//! its code. It runs under BanyanDB's name and flags so that iomond finds
//! its roots as it finds a real banyand's, and does its I/O the way
//! BanyanDB does: queries `pread64` part files, the memory-mapped inverted
//! index (`.seg`) is read by page faults, merges read their inputs with
//! `read(2)` and drop each chunk with `POSIX_FADV_DONTNEED` and the whole
//! file on close, and a merge output over the threshold gets `fdatasync`
//! and a whole-file DONTNEED. It knows exactly what it did: every command
//! answers, per file, the pages it asked for and those that were not in
//! the page cache before (`mincore`), the DONTNEED calls, the pages they
//! covered and the pages they dropped.
//!
//! With `IOMON_BANYAND_SERVE=1` it serves commands on stdin, one per line,
//! paths absolute (the tests build the tree itself, so that building it is
//! not the workload's I/O):
//!
//! ```text
//! read PATH [FIRST COUNT]    pread64 of whole pages, 1 MiB at a time
//! fault PATH                 map the file, touch each page, unmap
//! drop PATH [FIRST COUNT]    DONTNEED over the pages
//! readback PATH COUNT        FADV_RANDOM, then one byte of each of the first COUNT pages
//! merge OUT THRESHOLD IN...  read each IN (read(2), DONTNEED per chunk and on close), write OUT
//! ```
//!
//! and answers `f PATH asked=.. missed=.. calls=.. covered=.. dropped=..`
//! lines, one per file touched, then `ok` (or `error WHAT`). Without it
//! (as `cargo test` runs it) it checks its own accounting on a small file
//! and exits.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const CHUNK: usize = 1 << 20;

fn page() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize
}

/// What was done to one file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Did {
    asked: u64,
    missed: u64,
    calls: u64,
    covered: u64,
    dropped: u64,
}

/// Which of pages [first, first + count) of `f` are in the page cache.
fn resident(f: &File, first: usize, count: usize) -> std::io::Result<Vec<bool>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let len = count * page();
    // SAFETY: a fresh shared read-only mapping, checked, unmapped below;
    // mincore writes `count` bytes into a vector of that length.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            (first * page()) as libc::off_t,
        );
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut v = vec![0u8; count];
        let rc = libc::mincore(addr, len, v.as_mut_ptr());
        let err = std::io::Error::last_os_error();
        libc::munmap(addr, len);
        if rc != 0 {
            return Err(err);
        }
        Ok(v.into_iter().map(|b| b & 1 == 1).collect())
    }
}

fn missing(f: &File, first: usize, count: usize) -> std::io::Result<u64> {
    Ok(resident(f, first, count)?.iter().filter(|r| !**r).count() as u64)
}

fn pages_of(f: &File) -> std::io::Result<usize> {
    Ok(f.metadata()?.len() as usize / page())
}

/// DONTNEED over pages [first, first + count) (count 0: to the end),
/// with what it covered and dropped.
fn dontneed(f: &File, first: usize, count: usize, did: &mut Did) -> std::io::Result<()> {
    let total = pages_of(f)?;
    let n = if count == 0 { total - first } else { count };
    let before = n as u64 - missing(f, first, n)?;
    // SAFETY: plain syscall on our own descriptor.
    let rc = unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            (first * page()) as i64,
            if count == 0 {
                0
            } else {
                (count * page()) as i64
            },
            libc::POSIX_FADV_DONTNEED,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    let after = n as u64 - missing(f, first, n)?;
    did.calls += 1;
    did.covered += n as u64;
    did.dropped += before - after;
    Ok(())
}

/// pread64 of pages [first, first + count), CHUNK at a time.
fn pread_pages(f: &File, first: usize, count: usize, did: &mut Did) -> std::io::Result<()> {
    did.missed += missing(f, first, count)?;
    did.asked += count as u64;
    let mut buf = vec![0u8; CHUNK];
    let (mut off, end) = (first * page(), (first + count) * page());
    while off < end {
        let want = (end - off).min(CHUNK);
        // SAFETY: buf is valid for `want` bytes.
        let n = unsafe { libc::pread64(f.as_raw_fd(), buf.as_mut_ptr().cast(), want, off as i64) };
        if n <= 0 {
            return Err(std::io::Error::other(format!("pread64 at {off}: {n}")));
        }
        off += n as usize;
    }
    Ok(())
}

/// Maps the file and reads a byte of each page.
fn fault(f: &File, did: &mut Did) -> std::io::Result<()> {
    let n = pages_of(f)?;
    did.missed += missing(f, 0, n)?;
    did.asked += n as u64;
    let len = n * page();
    // SAFETY: a fresh shared read-only mapping of the file's length, read
    // within bounds, unmapped after.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut sum = 0u64;
        for i in 0..n {
            sum += std::ptr::read_volatile((addr as *const u8).add(i * page())) as u64;
        }
        std::hint::black_box(sum);
        libc::munmap(addr, len);
    }
    Ok(())
}

/// FADV_RANDOM (no readahead), then one byte of each of the first
/// `count` pages: exactly those pages come in.
fn readback(f: &File, count: usize, did: &mut Did) -> std::io::Result<()> {
    // SAFETY: plain syscall on our own descriptor.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    did.missed += missing(f, 0, count)?;
    did.asked += count as u64;
    for i in 0..count {
        let mut b = [0u8; 1];
        // SAFETY: b is valid for one byte.
        let n =
            unsafe { libc::pread64(f.as_raw_fd(), b.as_mut_ptr().cast(), 1, (i * page()) as i64) };
        if n != 1 {
            return Err(std::io::Error::other(format!("pread64 of page {i}: {n}")));
        }
    }
    Ok(())
}

/// A merge as BanyanDB's: each input read sequentially with read(2), a
/// DONTNEED after each chunk and one over the whole file on close; the
/// output written, `fdatasync`ed, and dropped whole when over `threshold`.
fn merge(
    out: &Path,
    threshold: u64,
    inputs: &[PathBuf],
    log: &mut Vec<(PathBuf, Did)>,
) -> std::io::Result<()> {
    // Read too: its residency is looked at (mincore needs a mapping).
    let mut w = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)?;
    let mut buf = vec![0u8; CHUNK];
    for p in inputs {
        let mut f = File::open(p)?;
        let mut did = Did::default();
        let n = pages_of(&f)?;
        // What the reads bring in: what is not cached when they start
        // (readahead brings the next chunks in before they are read).
        did.missed += missing(&f, 0, n)?;
        did.asked += n as u64;
        let mut at = 0usize;
        while at < n * page() {
            let want = (n * page() - at).min(CHUNK);
            f.read_exact(&mut buf[..want])?;
            dontneed(&f, at / page(), want / page(), &mut did)?;
            w.write_all(&buf[..want])?;
            at += want;
        }
        dontneed(&f, 0, 0, &mut did)?;
        log.push((p.clone(), did));
    }
    // SAFETY: plain syscall on our own descriptor.
    if unsafe { libc::fdatasync(w.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut did = Did::default();
    if w.metadata()?.len() > threshold {
        dontneed(&w, 0, 0, &mut did)?;
    }
    log.push((out.to_path_buf(), did));
    Ok(())
}

fn num(s: Option<&str>, what: &str) -> std::io::Result<usize> {
    s.and_then(|v| v.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("{what}: a number")))
}

/// One command; the files it touched and what it did to each.
fn run(line: &str) -> std::io::Result<Vec<(PathBuf, Did)>> {
    let mut w = line.split_whitespace();
    let cmd = w.next().unwrap_or("");
    let mut log = Vec::new();
    let mut did = Did::default();
    let path = |p: Option<&str>| -> std::io::Result<PathBuf> {
        p.map(PathBuf::from)
            .ok_or_else(|| std::io::Error::other("a path"))
    };
    match cmd {
        "read" | "drop" => {
            let p = path(w.next())?;
            let f = File::open(&p)?;
            let (first, count) = match w.next() {
                Some(a) => (num(Some(a), "first")?, num(w.next(), "count")?),
                None => (0, pages_of(&f)?),
            };
            if cmd == "read" {
                pread_pages(&f, first, count, &mut did)?;
            } else {
                dontneed(
                    &f,
                    first,
                    if first == 0 && count == pages_of(&f)? {
                        0
                    } else {
                        count
                    },
                    &mut did,
                )?;
            }
            log.push((p, did));
        }
        "fault" => {
            let p = path(w.next())?;
            fault(&File::open(&p)?, &mut did)?;
            log.push((p, did));
        }
        "readback" => {
            let p = path(w.next())?;
            let count = num(w.next(), "count")?;
            readback(&File::open(&p)?, count, &mut did)?;
            log.push((p, did));
        }
        "merge" => {
            let out = path(w.next())?;
            let threshold = num(w.next(), "threshold")? as u64;
            let inputs: Vec<PathBuf> = w.map(PathBuf::from).collect();
            merge(&out, threshold, &inputs, &mut log)?;
        }
        other => return Err(std::io::Error::other(format!("unknown command {other:?}"))),
    }
    Ok(log)
}

fn serve() {
    // BanyanDB's own name, as a target names it (the binary is banyand-HASH).
    // SAFETY: a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"banyand".as_ptr()) };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "quit" {
            break;
        }
        let reply = match run(&line) {
            Ok(log) => {
                let mut s = String::new();
                for (p, d) in log {
                    s.push_str(&format!(
                        "f {} asked={} missed={} calls={} covered={} dropped={}\n",
                        p.display(),
                        d.asked,
                        d.missed,
                        d.calls,
                        d.covered,
                        d.dropped
                    ));
                }
                s + "ok\n"
            }
            Err(e) => format!("error {line}: {e}\n"),
        };
        if out
            .write_all(reply.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            break;
        }
    }
}

/// Its own accounting on a small file: cold, warm, half dropped.
fn self_check() {
    let dir = std::env::var_os("IOMON_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
        .join(format!("iomon-banyand-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a test directory");
    let p = dir.join("fv.bin");
    let pages = 64;
    std::fs::write(&p, vec![7u8; pages * page()]).expect("write");
    let f = File::open(&p).expect("open");
    f.sync_all().expect("sync");
    let mut d = Did::default();
    dontneed(&f, 0, 0, &mut d).expect("dontneed");
    assert_eq!(
        missing(&f, 0, pages).unwrap(),
        pages as u64,
        "dropped whole"
    );
    let line = format!("read {}", p.display());
    let cold = run(&line).expect("read");
    assert_eq!(
        (cold[0].1.asked, cold[0].1.missed),
        (pages as u64, pages as u64)
    );
    let warm = run(&line).expect("read");
    assert_eq!(warm[0].1.missed, 0);
    let half = run(&format!("drop {} {} {}", p.display(), pages / 2, pages / 2)).expect("drop");
    assert_eq!(
        (half[0].1.covered, half[0].1.dropped),
        (pages as u64 / 2, pages as u64 / 2)
    );
    let back = run(&format!("readback {} {}", p.display(), pages)).expect("readback");
    assert_eq!(back[0].1.missed, pages as u64 / 2);
    std::fs::remove_dir_all(&dir).ok();
    println!("banyand workload: accounting checked on {pages} pages");
}

fn main() {
    if std::env::var_os("IOMON_BANYAND_SERVE").is_some() {
        serve();
    } else {
        self_check();
    }
}
