//! What the running kernel has, asked before anything is loaded (STYLE.md
//! 12, "probe the kernel, then load"): its BTF (tracepoints with typed
//! arguments, functions, BPF helpers, map types), tracefs and its events,
//! whether BPF trampolines and kprobes attach, its page size and HZ.
//! Every answer that is "no" says what is missing in words an operator can
//! look up.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libbpf_rs::btf::types::Enum;
use libbpf_rs::btf::Btf;

use crate::abi;
use libbpf_rs::AsRawLibbpf;

/// Where the kernel's own BTF is.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_KIND_TYPEDEF: u32 = 8;
const BTF_KIND_FUNC: u32 = 12;

/// Why a route cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// The kernel does not have it: the family is unavailable, not an error.
    Lacks(String),
    /// The kernel has it but this process may not use it: an error.
    Privilege(String),
}

impl Gap {
    pub fn text(&self) -> &str {
        match self {
            Gap::Lacks(s) | Gap::Privilege(s) => s,
        }
    }
}

/// What a refused BPF trampoline says, before `{func}: {error})`.
const TRAMPOLINE_REFUSED: &str = "BPF trampolines (fentry/fexit) do not attach here (";

/// Gaps in words, `; `-separated: the same text once, and trampolines
/// refused for the same reason on several functions as one (a route of
/// five syscalls would otherwise say the same thing five times).
pub fn join_gaps(gaps: &[Gap]) -> String {
    // (text, or the trampoline refusal's reason; functions refused for it)
    let mut parts: Vec<(&str, Vec<&str>)> = Vec::new();
    for g in gaps {
        let refused = g
            .text()
            .strip_prefix(TRAMPOLINE_REFUSED)
            .and_then(|rest| rest.split_once(": "));
        let (key, func) = match refused {
            Some((func, why)) => (why, Some(func)),
            None => (g.text(), None),
        };
        match parts
            .iter_mut()
            .find(|(k, fs)| *k == key && fs.is_empty() == func.is_none())
        {
            Some((_, fs)) => fs.extend(func),
            None => parts.push((key, func.into_iter().collect())),
        }
    }
    parts
        .iter()
        .map(|(key, funcs)| match funcs.is_empty() {
            true => key.to_string(),
            false => format!("{TRAMPOLINE_REFUSED}{}: {key}", funcs.join(", ")),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The running kernel, as far as iomon's routes care.
pub struct Kernel {
    btf: Btf<'static>,
    /// uname -r
    pub release: String,
    /// Mounted tracefs, or why not.
    pub tracefs: Result<PathBuf, Gap>,
    helpers: Vec<String>,
    map_types: Vec<String>,
    /// Per function: whether a BPF trampoline attaches there.
    trampolines: HashMap<String, Result<(), String>>,
    kprobes: HashMap<String, Result<(), String>>,
    /// log2 of the page size.
    pub page_shift: u32,
    /// CONFIG_HZ, and where it came from; `None` when it cannot be told.
    pub hz: Option<(u32, &'static str)>,
    /// Per shared event (bpf/core.toml): the first of its ways this kernel
    /// has, or why none.
    ways: HashMap<&'static str, Result<&'static abi::Way, Gap>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("this kernel has no BTF ({VMLINUX_BTF} is missing or unreadable): iomon's CO-RE programs need a kernel built with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf(#[source] libbpf_rs::Error),
    #[error("the kernel refused a BPF call ({0}): iomond needs root, or CAP_BPF and CAP_PERFMON (+ CAP_DAC_READ_SEARCH for tracefs)")]
    NoPrivilege(std::io::Error),
    #[error("iomond runs without {0}: it needs root, or CAP_BPF and CAP_PERFMON (+ CAP_DAC_READ_SEARCH for tracefs)")]
    MissingCapability(&'static str),
}

impl Kernel {
    /// Asks the kernel; `tracefs` is where classic tracepoints are looked
    /// up (mounted there if it is not and this process may).
    pub fn probe(tracefs: &Path) -> Result<Kernel, KernelError> {
        check_privilege()?;
        let btf = Btf::from_vmlinux().map_err(KernelError::NoBtf)?;
        let enum_names = |btf: &Btf<'static>, name: &str, prefix: &str| -> Vec<String> {
            btf.type_by_name::<Enum>(name)
                .map(|e| {
                    e.iter()
                        .filter_map(|m| m.name.and_then(|n| n.to_str()))
                        .filter_map(|n| n.strip_prefix(prefix).map(str::to_ascii_lowercase))
                        .collect()
                })
                .unwrap_or_default()
        };
        let helpers = enum_names(&btf, "bpf_func_id", "BPF_FUNC_");
        let map_types = enum_names(&btf, "bpf_map_type", "BPF_MAP_TYPE_");
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let hz = kernel_hz(&release);
        Ok(Kernel {
            btf,
            tracefs: ensure_tracefs(tracefs).map(|()| tracefs.to_path_buf()),
            helpers,
            map_types,
            trampolines: HashMap::new(),
            kprobes: HashMap::new(),
            ways: HashMap::new(),
            page_shift: page.trailing_zeros(),
            hz,
            release,
        })
    }

    fn find(&self, name: &str, kind: u32) -> bool {
        let Ok(c) = CString::new(name) else {
            return false;
        };
        // SAFETY: the BTF object is alive for self's lifetime; c is a valid
        // C string.
        let id = unsafe {
            libbpf_sys::btf__find_by_name_kind(
                self.btf.as_libbpf_object().as_ptr(),
                c.as_ptr(),
                kind,
            )
        };
        id >= 0
    }

    fn func_id(&self, name: &str) -> Option<u32> {
        let c = CString::new(name).ok()?;
        // SAFETY: as in `find`.
        let id = unsafe {
            libbpf_sys::btf__find_by_name_kind(
                self.btf.as_libbpf_object().as_ptr(),
                c.as_ptr(),
                BTF_KIND_FUNC,
            )
        };
        u32::try_from(id).ok()
    }

    /// A tracepoint with typed arguments (tp_btf).
    pub fn has_btf_tracepoint(&self, event: &str) -> bool {
        self.find(&format!("btf_trace_{event}"), BTF_KIND_TYPEDEF)
    }

    /// How this kernel shows a shared event: the first of its ways whose
    /// event it has (a typed tracepoint only with the argument the program
    /// reads), or why none (every way's gap, a privilege gap only if that
    /// is all that stood in the way).
    pub fn way(&mut self, sh: &'static abi::Shared) -> Result<&'static abi::Way, Gap> {
        if let Some(r) = self.ways.get(sh.name) {
            return r.clone();
        }
        let mut gaps = Vec::new();
        let mut found = None;
        for w in sh.ways {
            let gap = match w.program().attach() {
                abi::Attach::Tracepoint(cat, ev) => self.tracepoint(cat, ev).err(),
                abi::Attach::TpBtf(ev) => {
                    let arg = self.btf_tracepoint_arg(ev, 0);
                    match (self.has_btf_tracepoint(ev), w.arg) {
                        (false, _) => Some(Gap::Lacks(format!("no typed tracepoint {ev}"))),
                        (true, Some(want)) if arg.as_deref() != Some(want) => {
                            Some(Gap::Lacks(format!(
                                "tracepoint {ev} takes a {} here, not a {want}",
                                arg.as_deref().unwrap_or("?")
                            )))
                        }
                        _ => None,
                    }
                }
                abi::Attach::Trampoline(f) => self.trampoline(f).err(),
                abi::Attach::Kprobe(f) => self.kprobe(f).err(),
            };
            match gap {
                None => {
                    found = Some(w);
                    break;
                }
                Some(g) => gaps.push(g),
            }
        }
        let r = match found {
            Some(w) => Ok(w),
            None => {
                let text = join_gaps(&gaps);
                let why = format!("no way to see the shared event {}: {text}", sh.name);
                if !gaps.is_empty() && gaps.iter().all(|g| matches!(g, Gap::Privilege(_))) {
                    Err(Gap::Privilege(why))
                } else {
                    Err(Gap::Lacks(why))
                }
            }
        };
        self.ways.insert(sh.name, r.clone());
        r
    }

    /// The way already chosen for a shared event (see [`Kernel::way`]).
    pub fn chosen_way(&self, sh: &abi::Shared) -> Option<&'static abi::Way> {
        self.ways
            .get(sh.name)
            .and_then(|r| r.as_ref().ok().copied())
    }

    /// The struct a typed tracepoint's `i`th argument points to (`folio`,
    /// `page`), if it is a pointer to a struct.
    pub fn btf_tracepoint_arg(&self, event: &str, i: usize) -> Option<String> {
        use libbpf_rs::btf::types::FuncProto;
        use libbpf_rs::btf::{BtfKind, BtfType};
        let td: BtfType = self.btf.type_by_name(&format!("btf_trace_{event}"))?;
        // typedef -> pointer -> function prototype (void *, args...)
        let proto = td
            .skip_mods_and_typedefs()
            .next_type()?
            .skip_mods_and_typedefs();
        let proto = FuncProto::try_from(proto).ok()?;
        let param = proto.iter().nth(i + 1)?;
        let arg: BtfType = self.btf.type_by_id(param.ty)?;
        let arg = arg.skip_mods_and_typedefs();
        if arg.kind() != BtfKind::Ptr {
            return None;
        }
        let target = arg.next_type()?.skip_mods_and_typedefs();
        if target.kind() != BtfKind::Struct {
            return None;
        }
        target.name().map(|n| n.to_string_lossy().into_owned())
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.find(name, BTF_KIND_FUNC)
    }

    /// A BPF helper, by its name without `bpf_` (`task_pt_regs`).
    pub fn has_helper(&self, name: &str) -> bool {
        self.helpers.iter().any(|h| h == name)
    }

    /// A map type, by its name without `BPF_MAP_TYPE_` (`task_storage`).
    pub fn has_map_type(&self, name: &str) -> bool {
        self.map_types.iter().any(|m| m == name)
    }

    /// Task storage: per-thread state freed with its thread (5.11+).
    pub fn has_task_storage(&self) -> bool {
        self.has_map_type("task_storage") && self.has_helper("task_storage_get")
    }

    /// A classic tracepoint (`events/<category>/<event>` under tracefs).
    /// A tracepoint this process may not read is a privilege problem,
    /// not a kernel without it.
    pub fn tracepoint(&self, category: &str, event: &str) -> Result<(), Gap> {
        let root = self.tracefs.as_ref().map_err(Clone::clone)?;
        let dir = root.join("events").join(category).join(event);
        let id = dir.join("id");
        match std::fs::File::open(&id) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(Gap::Privilege(format!(
                "cannot read {} ({e}): classic tracepoints need CAP_DAC_READ_SEARCH (or root) to read tracefs",
                id.display()
            ))),
            Err(_) => Err(Gap::Lacks(format!(
                "no tracepoint {category}:{event} on this kernel ({} is missing)",
                dir.display()
            ))),
        }
    }

    /// Whether a BPF trampoline (fentry/fexit) attaches to `func`: a
    /// two-instruction program is loaded and attached there, once.
    pub fn trampoline(&mut self, func: &str) -> Result<(), Gap> {
        if let Some(r) = self.trampolines.get(func) {
            return r.clone().map_err(Gap::Lacks);
        }
        let r = match self.func_id(func) {
            None => Err(format!("no function {func} in this kernel's BTF")),
            Some(id) => attach_trampoline(id).map_err(|e| {
                // Privileges were checked first: a refusal now is the
                // kernel's (ftrace locked down, no direct calls, ...).
                format!("{TRAMPOLINE_REFUSED}{func}: {e})")
            }),
        };
        self.trampolines.insert(func.to_string(), r.clone());
        r.map_err(Gap::Lacks)
    }

    /// Whether a kprobe can be placed on `func`: one is created there and
    /// closed, once.
    pub fn kprobe(&mut self, func: &str) -> Result<(), Gap> {
        if let Some(r) = self.kprobes.get(func) {
            return r.clone().map_err(Gap::Lacks);
        }
        let r = open_kprobe(func);
        self.kprobes.insert(func.to_string(), r.clone());
        r.map_err(Gap::Lacks)
    }
}

/// The effective capabilities of this process (CapEff of /proc/self/status).
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether this process may do what `cap` allows (CAP_SYS_ADMIN covers
/// CAP_BPF and CAP_PERFMON, and stands for them before 5.8).
pub fn has_cap(cap: u32) -> bool {
    let Some(caps) = effective_caps() else {
        return true; // cannot tell: let the kernel answer
    };
    let has = |c: u32| caps & (1u64 << c) != 0;
    has(cap) || ((cap == CAP_BPF || cap == CAP_PERFMON) && has(CAP_SYS_ADMIN))
}

/// What any BPF use needs: the capabilities (tracing programs need
/// CAP_PERFMON besides CAP_BPF), and a one-slot array map the kernel
/// agrees to create. After this, a refusal is the kernel's policy, not a
/// missing privilege.
fn check_privilege() -> Result<(), KernelError> {
    if !has_cap(CAP_BPF) {
        return Err(KernelError::MissingCapability("CAP_BPF"));
    }
    if !has_cap(CAP_PERFMON) {
        return Err(KernelError::MissingCapability("CAP_PERFMON"));
    }
    // SAFETY: no pointers but the (null) name and options.
    let fd = unsafe {
        libbpf_sys::bpf_map_create(
            libbpf_sys::BPF_MAP_TYPE_ARRAY,
            std::ptr::null(),
            4,
            4,
            1,
            std::ptr::null(),
        )
    };
    if fd < 0 {
        return Err(KernelError::NoPrivilege(std::io::Error::from_raw_os_error(
            -fd,
        )));
    }
    // SAFETY: a fresh fd this function owns.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

fn attach_trampoline(btf_id: u32) -> Result<(), std::io::Error> {
    // r0 = 0; exit
    let insns = [
        libbpf_sys::bpf_insn {
            code: (libbpf_sys::BPF_ALU64 | libbpf_sys::BPF_MOV | libbpf_sys::BPF_K) as u8,
            ..Default::default()
        },
        libbpf_sys::bpf_insn {
            code: (libbpf_sys::BPF_JMP | libbpf_sys::BPF_EXIT) as u8,
            ..Default::default()
        },
    ];
    let mut opts = libbpf_sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
        expected_attach_type: libbpf_sys::BPF_TRACE_FENTRY,
        attach_btf_id: btf_id,
        ..Default::default()
    };
    let license = c"GPL";
    // SAFETY: insns and opts outlive the call; license is a C string.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_TRACING,
            std::ptr::null(),
            license.as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: fresh fds this function owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd) };
    let link = unsafe {
        libbpf_sys::bpf_raw_tracepoint_open(
            std::ptr::null(),
            std::os::fd::AsRawFd::as_raw_fd(&prog),
        )
    };
    if link < 0 {
        return Err(std::io::Error::from_raw_os_error(-link));
    }
    drop(unsafe { OwnedFd::from_raw_fd(link) });
    Ok(())
}

/// The perf PMU type of kprobes, if the kernel has one.
fn kprobe_pmu() -> Option<u32> {
    std::fs::read_to_string("/sys/bus/event_source/devices/kprobe/type")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn open_kprobe(func: &str) -> Result<(), String> {
    let Some(pmu) = kprobe_pmu() else {
        return Err(
            "this kernel has no kprobes (no kprobe event source in /sys/bus/event_source/devices)"
                .into(),
        );
    };
    let name = CString::new(func).map_err(|e| e.to_string())?;
    let mut attr = libbpf_sys::perf_event_attr {
        type_: pmu,
        size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        ..Default::default()
    };
    attr.__bindgen_anon_3.config1 = name.as_ptr() as u64;
    // SAFETY: attr and the name it points to outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const _,
            -1i32,
            0i32,
            -1i32,
            8u64, // PERF_FLAG_FD_CLOEXEC
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("a kprobe on {func} was refused: {e}"));
    }
    // SAFETY: a fresh fd this function owns.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Ok(())
}

/// Makes sure tracefs is mounted at `root` for the calling thread (classic
/// tracepoints need it). Where it is not, mounts it in a mount namespace of
/// the thread's own (`unshare(CLONE_NEWNS)`: the host's mounts propagate
/// in, none propagate out), so the host's mounts are never changed and
/// nothing is left to unmount: another process using or mounting tracefs
/// (bpftrace, perf, a second iomond) cannot lose it to this one, and the
/// namespace goes with the thread. Children the thread starts after this
/// see the mount too. `Err` says what to do, and whether the kernel lacks
/// tracefs or this process may not read or mount it.
pub fn ensure_tracefs(root: &Path) -> Result<(), Gap> {
    match std::fs::metadata(root.join("events")) {
        Ok(m) if m.is_dir() => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Gap::Privilege(format!(
                "cannot read tracefs at {} ({e}): classic tracepoints need CAP_DAC_READ_SEARCH (or root)",
                root.display()
            )))
        }
        _ => {}
    }
    match mount_tracefs_privately(root) {
        Ok(()) if root.join("events").is_dir() => {
            log::info!(
                "mounted tracefs at {} in a mount namespace of its own (the host's mounts are unchanged)",
                root.display()
            );
            Ok(())
        }
        Ok(()) => Err(Gap::Lacks(format!(
            "tracefs mounted at {} but has no events/ directory",
            root.display()
        ))),
        Err(e) => {
            let why = format!(
                "tracefs is not mounted at {} and mounting it failed ({e}); run `mount -t tracefs tracefs {}` as root",
                root.display(),
                root.display()
            );
            Err(if has_cap(CAP_SYS_ADMIN) {
                Gap::Lacks(why)
            } else {
                Gap::Privilege(why)
            })
        }
    }
}

/// The calling thread into a mount namespace of its own, every mount a
/// slave of the host's (theirs propagate in, ours not out): what it mounts
/// there the host never sees, and goes with the thread. Says which step
/// failed.
pub fn own_mount_namespace() -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("a mount namespace of its own: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("the host's mounts as slaves in its namespace: {e}"))
}

/// Tracefs mounted in a mount namespace of the thread's own
/// ([`own_mount_namespace`]). Says which step failed.
fn mount_tracefs_privately(root: &Path) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    own_mount_namespace()?;
    mount(
        Some("tracefs"),
        root,
        Some("tracefs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| e.to_string())
}

/// CONFIG_HZ: from the kernel's config file where there is one, else
/// measured from /proc/timer_list (jiffies against the monotonic clock).
fn kernel_hz(release: &str) -> Option<(u32, &'static str)> {
    let from_config = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("CONFIG_HZ="))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    if let Some(hz) = std::fs::read_to_string(format!("/boot/config-{release}"))
        .ok()
        .as_deref()
        .and_then(from_config)
    {
        return Some((hz, "/boot/config"));
    }
    if let Ok(f) = std::fs::File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(f)
            .read_to_string(&mut text)
            .is_ok()
        {
            if let Some(hz) = from_config(&text) {
                return Some((hz, "/proc/config.gz"));
            }
        }
    }
    measured_hz().map(|hz| (hz, "/proc/timer_list"))
}

/// (jiffies, ns) from /proc/timer_list.
fn timer_list() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/timer_list").ok()?;
    let now = text.lines().find_map(|l| {
        l.strip_prefix("now at ")?
            .strip_suffix(" nsecs")?
            .parse::<u64>()
            .ok()
    })?;
    let jiffies = text
        .lines()
        .find_map(|l| l.strip_prefix("jiffies: ")?.trim().parse::<u64>().ok())?;
    Some((jiffies, now))
}

/// HZ from two readings 250 ms apart, snapped to the values kernels are
/// built with.
fn measured_hz() -> Option<u32> {
    let (j0, t0) = timer_list()?;
    std::thread::sleep(Duration::from_millis(250));
    let (j1, t1) = timer_list()?;
    if t1 <= t0 || j1 <= j0 {
        return None;
    }
    let rate = (j1 - j0) as f64 * 1e9 / (t1 - t0) as f64;
    [100u32, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            (*a as f64 - rate)
                .abs()
                .total_cmp(&(*b as f64 - rate).abs())
        })
        .filter(|hz| (*hz as f64 - rate).abs() < *hz as f64 * 0.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_say_a_refusal_once_for_every_function_it_refused() {
        let refused = |f: &str, e: &str| Gap::Lacks(format!("{TRAMPOLINE_REFUSED}{f}: {e})"));
        let eperm = "Operation not permitted (os error 1)";
        let gaps = [
            refused("__x64_sys_read", eperm),
            Gap::Lacks("no typed tracepoint x".into()),
            refused("__x64_sys_pread64", eperm),
            refused("__x64_sys_readv", "No such device (os error 19)"),
            Gap::Lacks("no typed tracepoint x".into()),
        ];
        assert_eq!(
            join_gaps(&gaps),
            "BPF trampolines (fentry/fexit) do not attach here (__x64_sys_read, __x64_sys_pread64: Operation not permitted (os error 1)); \
             no typed tracepoint x; \
             BPF trampolines (fentry/fexit) do not attach here (__x64_sys_readv: No such device (os error 19))"
        );
        assert_eq!(join_gaps(&gaps[..1]), gaps[0].text());
        assert_eq!(join_gaps(&[]), "");
    }

    #[test]
    fn typed_tracepoint_arguments_are_read_from_btf() {
        let Ok(k) = Kernel::probe(std::path::Path::new("/nonexistent")) else {
            eprintln!("skipped: no BTF or no BPF here");
            return;
        };
        // Every kernel iomon runs on has the page-cache add event; its
        // argument is a folio from 5.18 on, a page before.
        let arg = k.btf_tracepoint_arg("mm_filemap_add_to_page_cache", 0);
        assert!(
            matches!(arg.as_deref(), Some("folio") | Some("page")),
            "{arg:?}"
        );
        assert_eq!(k.btf_tracepoint_arg("no_such_event_here", 0), None);
        assert_eq!(
            k.btf_tracepoint_arg("mm_filemap_add_to_page_cache", 5),
            None
        );
    }

    #[test]
    fn capabilities_are_read() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            assert!(
                has_cap(CAP_BPF) && has_cap(CAP_PERFMON) && has_cap(2 /* CAP_DAC_READ_SEARCH */)
            );
        }
        assert!(effective_caps().is_some());
    }

    #[test]
    fn hz_is_known_on_this_host() {
        // Every kernel iomon runs on has one of these; the config file or
        // /proc/timer_list tells (the latter needs root).
        if let Some((hz, from)) = kernel_hz(
            &nix::sys::utsname::uname()
                .unwrap()
                .release()
                .to_string_lossy(),
        ) {
            assert!([100, 250, 300, 1000].contains(&hz), "{hz} from {from}");
        }
    }

    #[test]
    fn timer_list_measure_agrees_with_the_config() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // /proc/timer_list is root-only
        }
        let Ok(f) = std::fs::File::open("/proc/config.gz") else {
            return;
        };
        let mut text = String::new();
        if flate2::read::GzDecoder::new(f)
            .read_to_string(&mut text)
            .is_err()
        {
            return;
        }
        let Some(cfg) = text
            .lines()
            .find_map(|l| l.strip_prefix("CONFIG_HZ="))
            .and_then(|v| v.parse::<u32>().ok())
        else {
            return;
        };
        assert_eq!(measured_hz(), Some(cfg));
    }
}
