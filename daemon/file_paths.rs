//! Paths of the targets' files. The kernel counts a file by device and
//! inode; its path is looked up here: among the open files of the
//! target's processes (/proc/PID/fd), else under the configured data
//! directories (walked at most once a minute, and only while some file is
//! unknown), and remembered, bounded. What cannot be found is counted.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::sample::FileSample;

/// Paths remembered at most (the oldest learned go first).
pub const MAX_KNOWN: usize = 65_536;
/// Entries one walk of the data directories looks at, at most.
pub const MAX_WALK: usize = 200_000;
/// Open files of one process looked at, at most.
pub const MAX_FDS: usize = 65_536;
const WALK_EVERY: Duration = Duration::from_secs(60);

/// The kernel's dev_t (major << 20 | minor) of a stat(2) st_dev.
pub fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    (major << 20) | (minor & 0xf_ffff)
}

pub struct FilePaths {
    dirs: Vec<PathBuf>,
    known: HashMap<(u32, u64), String>,
    order: VecDeque<(u32, u64)>,
    last_walk: Option<Instant>,
}

impl FilePaths {
    pub fn new(dirs: Vec<PathBuf>) -> FilePaths {
        FilePaths {
            dirs,
            known: HashMap::new(),
            order: VecDeque::new(),
            last_walk: None,
        }
    }

    pub fn set_dirs(&mut self, dirs: Vec<PathBuf>) {
        if dirs != self.dirs {
            self.dirs = dirs;
            self.last_walk = None;
        }
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    fn learn(&mut self, dev: u32, ino: u64, path: String) {
        if self.known.insert((dev, ino), path).is_none() {
            self.order.push_back((dev, ino));
            while self.known.len() > MAX_KNOWN {
                match self.order.pop_front() {
                    Some(k) => {
                        self.known.remove(&k);
                    }
                    None => break,
                }
            }
        }
    }

    /// Learns the open regular files of a process.
    fn scan_fds(&mut self, pid: u32) {
        let dir = format!("/proc/{pid}/fd");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten().take(MAX_FDS) {
            let link = e.path();
            let (Ok(m), Ok(target)) = (std::fs::metadata(&link), std::fs::read_link(&link)) else {
                continue;
            };
            if m.is_file() {
                self.learn(
                    kernel_dev(m.dev()),
                    m.ino(),
                    target.to_string_lossy().into_owned(),
                );
            }
        }
    }

    /// Learns the regular files under the data directories.
    fn walk_dirs(&mut self) {
        self.last_walk = Some(Instant::now());
        let mut stack: Vec<PathBuf> = self.dirs.clone();
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                seen += 1;
                if seen > MAX_WALK {
                    return;
                }
                let Ok(m) = e.metadata() else { continue };
                if m.is_dir() {
                    stack.push(e.path());
                } else if m.is_file() {
                    self.learn(
                        kernel_dev(m.dev()),
                        m.ino(),
                        e.path().to_string_lossy().into_owned(),
                    );
                }
            }
        }
    }

    /// Names the files it can; `pids`: the processes of the files'
    /// targets. Returns how many stay unnamed.
    pub fn resolve(&mut self, files: &mut [FileSample], pids: &[u32]) -> u64 {
        let missing = |fp: &FilePaths, files: &mut [FileSample]| {
            let mut n = 0;
            for f in files.iter_mut().filter(|f| f.path.is_none()) {
                match fp.known.get(&(f.dev, f.ino)) {
                    Some(p) => f.path = Some(p.clone()),
                    None => n += 1,
                }
            }
            n
        };
        if missing(self, files) == 0 {
            return 0;
        }
        for pid in pids {
            self.scan_fds(*pid);
        }
        if missing(self, files) == 0 {
            return 0;
        }
        if !self.dirs.is_empty() && self.last_walk.is_none_or(|t| t.elapsed() >= WALK_EVERY) {
            self.walk_dirs();
        }
        missing(self, files)
    }

    /// For tests: the path known for a file.
    pub fn path_of(&self, dev: u32, ino: u64) -> Option<&str> {
        self.known.get(&(dev, ino)).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn file(dev: u32, ino: u64) -> FileSample {
        FileSample {
            target: "t".into(),
            dev,
            ino,
            path: None,
            pages: vec![0; crate::sample::file::NR],
        }
    }

    #[test]
    fn open_files_and_data_dirs_name_files_and_the_rest_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("seg-1")).unwrap();
        std::fs::write(data.join("seg-1/part"), b"x").unwrap();
        std::fs::write(dir.path().join("open"), b"y").unwrap();
        let stat = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (kernel_dev(m.dev()), m.ino())
        };
        let (pd, pi) = stat(&data.join("seg-1/part"));
        let (od, oi) = stat(&dir.path().join("open"));
        let _open = std::fs::File::open(dir.path().join("open")).unwrap();
        let mut fp = FilePaths::new(vec![data.clone()]);
        let mut files = vec![file(pd, pi), file(od, oi), file(1, 1)];
        let unresolved = fp.resolve(&mut files, &[std::process::id()]);
        assert_eq!(unresolved, 1, "{files:?}");
        assert_eq!(
            files[0].path.as_deref(),
            Some(data.join("seg-1/part").to_str().unwrap())
        );
        assert_eq!(
            files[1].path.as_deref(),
            Some(dir.path().join("open").to_str().unwrap())
        );
        assert!(files[2].path.is_none());
    }

    #[test]
    fn the_kernel_dev_t_is_major_shifted_by_20() {
        assert_eq!(kernel_dev(libc::makedev(259, 1)), 259 << 20 | 1);
        assert_eq!(kernel_dev(libc::makedev(8, 300)), 8 << 20 | 300);
    }

    #[test]
    fn what_it_remembers_is_bounded() {
        let mut fp = FilePaths::new(Vec::new());
        for i in 0..(MAX_KNOWN as u64 + 10) {
            fp.learn(1, i, format!("/f{i}"));
        }
        assert_eq!(fp.len(), MAX_KNOWN);
        assert!(fp.path_of(1, 0).is_none(), "the oldest went first");
        assert!(fp.path_of(1, MAX_KNOWN as u64 + 9).is_some());
    }
}
