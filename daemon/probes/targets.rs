//! Targets as the kernel sees them: a thread name, a process, or a cgroup
//! v2 given by its id and depth (its processes and its descendants'). A
//! cgroup path is resolved against the cgroup v2 mount; one that does not
//! exist (yet: a service not started) is inactive and looked up again.

use std::path::{Path, PathBuf};

use super::skel::types::{iomon_target, iomon_targets};

/// Target slots in the kernel (`IOMON_TARGETS`).
pub const SLOTS: usize = 8;
const _: () = assert!(std::mem::size_of::<iomon_targets>() == 16 + SLOTS * 40);

/// What a target matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Comm(String),
    /// A path under the cgroup v2 mount.
    Cgroup(String),
    Pid(u32),
}

/// A target as the kernel matches it; `None` when it cannot be now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Comm([u8; 16]),
    Cgroup { id: u64, level: u32 },
    Pid(u32),
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on unified
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones), from mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        // ... mount-point ... - fstype source options
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// The id and depth of a cgroup v2 directory (its inode number is its id).
pub fn cgroup_id(root: &Path, path: &str) -> Result<(u64, u32), String> {
    use std::os::unix::fs::MetadataExt;
    let rel = path.trim_matches('/');
    let dir = root.join(rel);
    let m = std::fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !m.is_dir() {
        return Err(format!("{} is not a cgroup directory", dir.display()));
    }
    let level = rel.split('/').filter(|p| !p.is_empty()).count() as u32;
    Ok((m.ino(), level))
}

impl Matcher {
    /// How the kernel matches it now; `Err` says why it cannot.
    pub fn resolve(&self, cgroup_root: Option<&Path>) -> Result<Resolved, String> {
        match self {
            Matcher::Comm(c) => {
                let mut b = [0u8; 16];
                let n = c.len().min(15);
                b[..n].copy_from_slice(&c.as_bytes()[..n]);
                Ok(Resolved::Comm(b))
            }
            Matcher::Pid(p) => Ok(Resolved::Pid(*p)),
            Matcher::Cgroup(path) => {
                let root = cgroup_root.ok_or("this host has no cgroup v2 hierarchy mounted")?;
                let (id, level) = cgroup_id(root, path)?;
                Ok(Resolved::Cgroup { id, level })
            }
        }
    }
}

/// The bytes of `struct iomon_targets` for these slots.
pub fn encode(slots: &[Option<Resolved>], gen: u64) -> Vec<u8> {
    let mut t = iomon_targets {
        gen,
        nr: slots.iter().filter(|s| s.is_some()).count() as u32,
        ..Default::default()
    };
    for (i, r) in slots.iter().take(SLOTS).enumerate() {
        let mut e = iomon_target::default();
        match r {
            None => {}
            Some(Resolved::Comm(b)) => {
                e.kind = 1;
                for (d, s) in e.comm.iter_mut().zip(b) {
                    *d = *s as _;
                }
            }
            Some(Resolved::Cgroup { id, level }) => {
                e.kind = 2;
                e.cgroup = *id;
                e.level = *level;
            }
            Some(Resolved::Pid(p)) => {
                e.kind = 3;
                e.tgid = *p;
            }
        }
        t.t[i] = e;
    }
    // SAFETY: iomon_targets is plain old data (integers and byte arrays).
    unsafe {
        std::slice::from_raw_parts(
            (&t as *const iomon_targets).cast::<u8>(),
            std::mem::size_of::<iomon_targets>(),
        )
    }
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_resolve_to_id_and_depth() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("system.slice/x.service")).unwrap();
        let (id, level) = cgroup_id(dir.path(), "/system.slice/x.service/").unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(dir.path().join("system.slice/x.service"))
            .unwrap()
            .ino();
        assert_eq!((id, level), (ino, 2));
        assert!(cgroup_id(dir.path(), "nope").unwrap_err().contains("nope"));
    }

    #[test]
    fn encoding_puts_each_target_in_its_slot() {
        let b = encode(
            &[
                Some(Resolved::Pid(7)),
                None,
                Some(Resolved::Comm(*b"banyand\0\0\0\0\0\0\0\0\0")),
            ],
            9,
        );
        assert_eq!(b.len(), 16 + 8 * 40);
        assert_eq!(u64::from_ne_bytes(b[0..8].try_into().unwrap()), 9);
        assert_eq!(
            u32::from_ne_bytes(b[8..12].try_into().unwrap()),
            2,
            "two set"
        );
        let slot = |i: usize| &b[16 + 40 * i..16 + 40 * (i + 1)];
        assert_eq!(u32::from_ne_bytes(slot(0)[0..4].try_into().unwrap()), 3);
        assert_eq!(u32::from_ne_bytes(slot(0)[16..20].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(slot(1)[0..4].try_into().unwrap()), 0);
        assert_eq!(&slot(2)[24..31], b"banyand");
    }
}
