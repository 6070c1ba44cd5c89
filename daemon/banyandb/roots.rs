//! Where a BanyanDB process keeps its files, read from its own command
//! line (`/proc/PID/cmdline`, which any user may read; no ptrace): each
//! engine's root flag (default `/tmp`) and data flag, as BanyanDB resolves
//! them (banyand/<engine>/svc_*.go: `<root>/<engine>/data` unless the data
//! flag is given; relative paths against the process's working
//! directory), and the flags its DONTNEED threshold follows.

use std::path::{Path, PathBuf};

use super::layout::Layout;

/// One engine's directories in one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineRoot {
    pub engine: String,
    /// `<root>/<engine>`: snapshots/ and repairs/ sit here.
    pub home: PathBuf,
    /// Where its live files are (`<home>/data`, or the data flag's).
    pub data: PathBuf,
    /// `<root>`: failed-parts/ sits here.
    pub root: PathBuf,
    /// Whether the command line names it (a root or data flag), rather
    /// than BanyanDB's default: a default that does not exist is an engine
    /// not in use, not a problem to report.
    pub explicit: bool,
}

/// What a BanyanDB process's command line says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Roots {
    pub engines: Vec<EngineRoot>,
    /// `--allowed-percent` (default 75) and `--allowed-bytes` (default 0),
    /// the DONTNEED threshold's inputs.
    pub allowed_percent: u64,
    pub allowed_bytes: u64,
    /// Relative paths it could not resolve (its working directory was not
    /// readable): said, and its engines left out.
    pub unresolved: Vec<String>,
}

/// The value of `--name` in an argument list: `--name=v` or `--name v`
/// (the last one given wins, as with BanyanDB's flag parser).
pub fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let long = format!("--{name}");
    let eq = format!("--{name}=");
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(v) = a.strip_prefix(&eq) {
            found = Some(v);
        } else if *a == long {
            if let Some(v) = args.get(i + 1) {
                found = Some(v.as_str());
                i += 1;
            }
        } else if a == "--" {
            break;
        }
        i += 1;
    }
    found
}

/// A size as BanyanDB's flags take it: bytes, or with a unit (`512MiB`,
/// `2GB`, `1g`); `None` when it is not one.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// The roots a command line names. `cwd`: the process's working
/// directory, where relative paths are resolved (`None`: not readable).
pub fn from_args(args: &[String], cwd: Option<&Path>, layout: &Layout) -> Roots {
    let mut r = Roots {
        allowed_percent: flag(args, "allowed-percent")
            .and_then(|v| v.parse().ok())
            .unwrap_or(75),
        allowed_bytes: flag(args, "allowed-bytes")
            .and_then(parse_bytes)
            .unwrap_or(0),
        ..Default::default()
    };
    let abs = |p: &str, r: &mut Roots| -> Option<PathBuf> {
        let p = Path::new(p);
        if p.is_absolute() {
            return Some(p.to_path_buf());
        }
        match cwd {
            Some(c) => Some(c.join(p)),
            None => {
                r.unresolved.push(p.display().to_string());
                None
            }
        }
    };
    for e in &layout.engines {
        let data_flag = e.data_flag.as_deref().and_then(|f| flag(args, f));
        let explicit =
            flag(args, &e.root_flag).is_some() || data_flag.is_some_and(|d| !d.is_empty());
        let root = flag(args, &e.root_flag).unwrap_or("/tmp");
        let Some(root) = abs(root, &mut r) else {
            continue;
        };
        let home = root.join(&e.name);
        let data = match data_flag {
            Some(d) if !d.is_empty() => match abs(d, &mut r) {
                Some(d) => d,
                None => continue,
            },
            _ => home.join("data"),
        };
        r.engines.push(EngineRoot {
            engine: e.name.clone(),
            home,
            data,
            root,
            explicit,
        });
    }
    r
}

/// A process's command line (NUL-separated), or why not.
pub fn cmdline(proc_root: &Path, pid: u32) -> std::io::Result<Vec<String>> {
    let raw = std::fs::read(proc_root.join(pid.to_string()).join("cmdline"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// A process's working directory, if this process may read it.
pub fn cwd(proc_root: &Path, pid: u32) -> Option<PathBuf> {
    std::fs::read_link(proc_root.join(pid.to_string()).join("cwd")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_are_read_both_ways_and_the_last_wins() {
        let a = args("banyand standalone --measure-root-path=/a --stream-root-path /b --measure-root-path /c -- --trace-root-path /x");
        assert_eq!(flag(&a, "measure-root-path"), Some("/c"));
        assert_eq!(flag(&a, "stream-root-path"), Some("/b"));
        assert_eq!(flag(&a, "trace-root-path"), None, "nothing after --");
        assert_eq!(flag(&a, "measure-root"), None, "a prefix is not the flag");
    }

    #[test]
    fn roots_follow_banyandb_defaults_and_overrides() {
        let l = Layout::built_in();
        let r = from_args(
            &args("banyand standalone --measure-root-path /srv/b --trace-data-path /fast/trace --allowed-percent 60 --allowed-bytes=2GiB"),
            Some(Path::new("/work")),
            &l,
        );
        let get = |e: &str| r.engines.iter().find(|x| x.engine == e).unwrap().clone();
        assert_eq!(get("measure").data, Path::new("/srv/b/measure/data"));
        assert_eq!(get("measure").home, Path::new("/srv/b/measure"));
        assert_eq!(
            get("stream").data,
            Path::new("/tmp/stream/data"),
            "root flag defaults to /tmp"
        );
        assert_eq!(get("trace").data, Path::new("/fast/trace"));
        assert_eq!(get("property").data, Path::new("/tmp/property/data"));
        assert_eq!((r.allowed_percent, r.allowed_bytes), (60, 2 << 30));
        // Relative: against the working directory, or said when unknown.
        let r = from_args(
            &args("banyand --measure-root-path rel"),
            Some(Path::new("/work")),
            &l,
        );
        assert_eq!(r.engines[0].data, Path::new("/work/rel/measure/data"));
        let r = from_args(&args("banyand --measure-root-path rel"), None, &l);
        assert_eq!(r.unresolved, vec!["rel".to_string()]);
        assert!(r.engines.iter().all(|e| e.engine != "measure"));
        let d = from_args(&args("banyand"), None, &l);
        assert_eq!((d.allowed_percent, d.allowed_bytes), (75, 0));
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("2GB"), Some(2_000_000_000));
        assert_eq!(parse_bytes("1.5gi"), Some(3 << 29));
        assert_eq!(parse_bytes("lots"), None);
    }
}
