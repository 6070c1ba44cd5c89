//! `iomond.toml`: file defaults, then the command line on top.
//!
//! Unknown keys and bad values are errors naming the file, the key and,
//! where the TOML parser gives one, the line. A parse error never echoes
//! the file's contents (the daemon may be pointed at any file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::drain::Strategy;
use crate::family;
pub use crate::units::{format_duration, parse_duration, parse_size, Size, Span};

pub const DEFAULT_PATH: &str = "/etc/iomond/iomond.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Value { key: &'static str, message: String },
    #[error("invalid value for export.banyandb.{key}: {message}")]
    Export { key: &'static str, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// journald priority prefixes when stderr is the journal, else stderr.
    #[default]
    Auto,
    Stderr,
    Syslog,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    /// Drain interval.
    pub interval: Span,
    /// Per-process table strategy: "drain" or "accumulate".
    pub strategy: StrategyName,
    /// History store and other state.
    pub state_dir: PathBuf,
    /// Control socket.
    pub socket: PathBuf,
    /// Group that owns the socket (members may query).
    pub socket_group: String,
    /// Group whose members may change strategy/interval/retention and reload.
    pub admin_group: String,
    /// Processes kept in each Sample.
    pub top_k: usize,
    /// Capacity of the kernel's per-process map.
    pub proc_capacity: u32,
    /// Per-process totals kept in memory, at most.
    pub proc_table_max: usize,
    /// Per-process totals idle this long are forgotten.
    pub proc_idle_ttl: Span,
    /// Control connections at once, at most.
    pub max_clients: usize,
    /// A control connection idle this long is closed.
    pub client_idle_timeout: Span,
    pub log: LogTarget,
    /// error, warn, info, debug or trace.
    pub log_level: String,
}

/// The strategy as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyName {
    Drain,
    Accumulate,
}

impl From<StrategyName> for Strategy {
    fn from(s: StrategyName) -> Strategy {
        match s {
            StrategyName::Drain => Strategy::Drain,
            StrategyName::Accumulate => Strategy::Accumulate,
        }
    }
}

impl From<Strategy> for StrategyName {
    fn from(s: Strategy) -> StrategyName {
        match s {
            Strategy::Drain => StrategyName::Drain,
            Strategy::Accumulate => StrategyName::Accumulate,
        }
    }
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            interval: Span::secs(10),
            strategy: StrategyName::Drain,
            state_dir: PathBuf::from("/var/lib/iomond"),
            socket: PathBuf::from("/run/iomond/iomond.sock"),
            socket_group: "iomon".into(),
            admin_group: "iomon-admin".into(),
            top_k: 20,
            proc_capacity: 10240,
            proc_table_max: 4096,
            proc_idle_ttl: Span::secs(3600),
            max_clients: 256,
            client_idle_timeout: Span::secs(60),
            log: LogTarget::Auto,
            log_level: "info".into(),
        }
    }
}

/// Which probe families to attach: `name = true|false` for any family in
/// [`family::ALL`]; a family not named keeps its declared default
/// (`default_on` in its `bpf/families/<name>.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbesSection(BTreeMap<&'static str, bool>);

impl Default for ProbesSection {
    fn default() -> Self {
        ProbesSection(
            family::ALL
                .iter()
                .map(|f| (f.name(), f.schema.default_on))
                .collect(),
        )
    }
}

impl ProbesSection {
    /// The families switched on, in display order.
    pub fn enabled(&self) -> Vec<&'static str> {
        family::ALL
            .iter()
            .map(|f| f.name())
            .filter(|n| self.is_on(n))
            .collect()
    }

    pub fn is_on(&self, name: &str) -> bool {
        self.0.get(name).copied().unwrap_or(false)
    }

    pub fn set(&mut self, name: &'static str, on: bool) {
        self.0.insert(name, on);
    }
}

impl Serialize for ProbesSection {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = ser.serialize_map(Some(self.0.len()))?;
        for (name, on) in &self.0 {
            m.serialize_entry(name, on)?;
        }
        m.end()
    }
}

/// A `[probes]` key: the name of a registered family. Refused as a key
/// (not as the table) so that the error points at its line.
struct FamilyKey(&'static str);

impl<'de> Deserialize<'de> for FamilyKey {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let key = String::deserialize(de)?;
        family::by_name(&key)
            .map(|f| FamilyKey(f.name()))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown probe family `{key}`, expected one of {}",
                    family::names().join(", ")
                ))
            })
    }
}

impl<'de> Deserialize<'de> for ProbesSection {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ProbesSection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of probe family = true|false")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut section = ProbesSection::default();
                while let Some(FamilyKey(name)) = m.next_key()? {
                    section.set(name, m.next_value()?);
                }
                Ok(section)
            }
        }
        de.deserialize_map(Visit)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub enabled: bool,
    pub flush_interval: Span,
    pub retention_raw: Span,
    pub retention_1m: Span,
    pub retention_1h: Span,
    pub max_size: Size,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            enabled: true,
            flush_interval: Span::secs(5),
            retention_raw: Span::secs(48 * 3600),
            retention_1m: Span::secs(14 * 86_400),
            retention_1h: Span::secs(400 * 86_400),
            max_size: Size(256 << 20),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Addresses to serve Prometheus text on; empty = off.
    pub listen: Vec<String>,
    /// Process names that always get their own series.
    pub targets: Vec<String>,
    /// Per-process series at most (the rest add up under comm="other").
    pub max_series: usize,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: Vec::new(),
            targets: vec!["banyand".into()],
            max_series: 20,
        }
    }
}

/// `[files]`: the targets' files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesSection {
    /// Where the targets' files are looked for by inode when no process of
    /// theirs has them open (a part merged away, a file only evicted).
    pub data_dirs: Vec<PathBuf>,
    /// Files kept per target and interval in the history, by each of
    /// missed, evicted, DONTNEED and read pages; 0 keeps none.
    pub top: usize,
    /// Pages of a target's file read back within this long after they
    /// were evicted are refaults (by the eviction's cause); 0s: not
    /// looked for.
    pub refault_window: Span,
    /// Blocks (of 512 pages: 2 MiB with 4 KiB pages) of targets' files
    /// with pages out of the cache the kernel remembers for their
    /// refaults; what does not fit is counted (iomon_refault_dropped).
    pub refault_blocks: u32,
    /// BanyanDB's on-disk layout (see /usr/share/iomon/banyandb-layout.toml);
    /// unset: the one iomond is built with.
    pub banyandb_layout: Option<PathBuf>,
}

impl Default for FilesSection {
    fn default() -> Self {
        FilesSection {
            data_dirs: vec![PathBuf::from("/var/lib/banyandb")],
            top: 5,
            refault_window: Span::secs(300),
            refault_blocks: 16_384,
            banyandb_layout: None,
        }
    }
}

/// What a target matches: a thread name, a cgroup v2 (and its
/// descendants: a systemd unit, a container), or a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// A path under the cgroup v2 mount, e.g. `system.slice/banyandb.service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// `[targets]`: name = { comm = ".." } | { cgroup = ".." } | { pid = N }.
/// A target's events are counted in the kernel in its own slots, exactly,
/// whatever the host does; at most [`MAX_TARGETS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TargetsSection(pub BTreeMap<String, TargetSpec>);

/// Targets at most (the kernel's slots).
pub const MAX_TARGETS: usize = crate::probes::targets::SLOTS;

impl TargetsSection {
    /// (name, what it matches), in name order.
    pub fn matchers(&self) -> Vec<(String, crate::probes::targets::Matcher)> {
        use crate::probes::targets::Matcher;
        self.0
            .iter()
            .filter_map(|(name, s)| {
                let m = match (&s.comm, &s.cgroup, s.pid) {
                    (Some(c), _, _) => Matcher::Comm(c.clone()),
                    (_, Some(c), _) => Matcher::Cgroup(c.clone()),
                    (_, _, Some(p)) => Matcher::Pid(p),
                    _ => return None,
                };
                Some((name.clone(), m))
            })
            .collect()
    }

    /// Names that target processes by name (they get per-name series).
    pub fn comms(&self) -> Vec<String> {
        self.0.values().filter_map(|s| s.comm.clone()).collect()
    }
}

impl Default for TargetsSection {
    fn default() -> Self {
        let spec = |comm: Option<&str>, cgroup: Option<&str>| TargetSpec {
            comm: comm.map(str::to_string),
            cgroup: cgroup.map(str::to_string),
            pid: None,
        };
        // What BanyanDB's own KTM module scopes to: its service's cgroup,
        // and its process name (which also catches it outside systemd).
        TargetsSection(BTreeMap::from([
            ("banyand".to_string(), spec(Some("banyand"), None)),
            (
                "banyandb.service".to_string(),
                spec(None, Some("system.slice/banyandb.service")),
            ),
        ]))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonSection,
    pub probes: ProbesSection,
    pub store: StoreSection,
    pub metrics: MetricsSection,
    pub targets: TargetsSection,
    pub files: FilesSection,
    /// `[export.banyandb]`: off unless present.
    pub export: crate::export::config::ExportSection,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(text, &e),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.daemon;
        if d.interval.0 < Duration::from_millis(100) || d.interval.0 > Duration::from_secs(3600) {
            return Err(ConfigError::Value {
                key: "daemon.interval",
                message: format!("{} is outside 100ms..1h", d.interval),
            });
        }
        if d.top_k == 0 || d.top_k > 1000 {
            return Err(ConfigError::Value {
                key: "daemon.top_k",
                message: format!("{} is outside 1..1000", d.top_k),
            });
        }
        if d.proc_capacity < 64 || d.proc_capacity > 1 << 20 {
            return Err(ConfigError::Value {
                key: "daemon.proc_capacity",
                message: format!("{} is outside 64..1048576", d.proc_capacity),
            });
        }
        if d.proc_table_max == 0 {
            return Err(ConfigError::Value {
                key: "daemon.proc_table_max",
                message: "must be at least 1".into(),
            });
        }
        if d.max_clients == 0 {
            return Err(ConfigError::Value {
                key: "daemon.max_clients",
                message: "must be at least 1".into(),
            });
        }
        if log::LevelFilter::from_str_opt(&d.log_level).is_none() {
            return Err(ConfigError::Value {
                key: "daemon.log_level",
                message: format!(
                    "{:?} is not one of error, warn, info, debug, trace",
                    d.log_level
                ),
            });
        }
        let s = &self.store;
        if s.flush_interval.0 < Duration::from_millis(100) {
            return Err(ConfigError::Value {
                key: "store.flush_interval",
                message: format!("{} is below 100ms", s.flush_interval),
            });
        }
        for (key, span) in [
            ("store.retention_raw", s.retention_raw),
            ("store.retention_1m", s.retention_1m),
            ("store.retention_1h", s.retention_1h),
        ] {
            if span.0 < Duration::from_secs(60) {
                return Err(ConfigError::Value {
                    key,
                    message: format!("{span} is below 1m"),
                });
            }
        }
        if s.max_size.0 < 1 << 20 {
            return Err(ConfigError::Value {
                key: "store.max_size",
                message: "must be at least 1MiB".into(),
            });
        }
        let t = &self.targets.0;
        if t.len() > MAX_TARGETS {
            return Err(ConfigError::Value {
                key: "targets",
                message: format!("{} targets, at most {MAX_TARGETS}", t.len()),
            });
        }
        for (name, spec) in t {
            let set = [
                spec.comm.is_some(),
                spec.cgroup.is_some(),
                spec.pid.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if set != 1 {
                return Err(ConfigError::Value {
                    key: "targets",
                    message: format!("{name:?}: give exactly one of comm, cgroup, pid"),
                });
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@:".contains(c))
            {
                return Err(ConfigError::Value {
                    key: "targets",
                    message: format!("{name:?}: a target's name is letters, digits and . _ - @ :"),
                });
            }
            if let Some(c) = &spec.comm {
                if c.is_empty() || c.len() > 15 {
                    return Err(ConfigError::Value {
                        key: "targets",
                        message: format!(
                            "{name:?}: comm {c:?} is 1 to 15 bytes (the kernel's TASK_COMM_LEN)"
                        ),
                    });
                }
            }
            if let Some(c) = &spec.cgroup {
                if c.split('/').any(|p| p == "..") {
                    return Err(ConfigError::Value {
                        key: "targets",
                        message: format!("{name:?}: cgroup {c:?} may not contain .."),
                    });
                }
            }
        }
        if self.files.top > 100 {
            return Err(ConfigError::Value {
                key: "files.top",
                message: format!("{} is outside 0..100", self.files.top),
            });
        }
        if self.files.refault_window.0 > std::time::Duration::from_secs(24 * 3600) {
            return Err(ConfigError::Value {
                key: "files.refault_window",
                message: format!("{} is over a day", self.files.refault_window),
            });
        }
        if !(64..=1 << 22).contains(&self.files.refault_blocks) {
            return Err(ConfigError::Value {
                key: "files.refault_blocks",
                message: format!("{} is outside 64..4194304", self.files.refault_blocks),
            });
        }
        if let Some(p) = &self.files.banyandb_layout {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Value {
                key: "files.banyandb_layout",
                message: format!("cannot read {}: {e}", p.display()),
            })?;
            crate::banyandb::Layout::parse(&text).map_err(|e| ConfigError::Value {
                key: "files.banyandb_layout",
                message: format!("{}: {e}", p.display()),
            })?;
        }
        for d in &self.files.data_dirs {
            if !d.is_absolute() {
                return Err(ConfigError::Value {
                    key: "files.data_dirs",
                    message: format!("{} is not an absolute path", d.display()),
                });
            }
        }
        if let Some(b) = &self.export.banyandb {
            b.validate(&family::names())
                .map_err(|(key, message)| ConfigError::Export { key, message })?;
            if !self.store.enabled {
                return Err(ConfigError::Export {
                    key: "endpoint",
                    message: "the exporter sends the history: it needs [store] enabled = true"
                        .into(),
                });
            }
        }
        for a in &self.metrics.listen {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Value {
                    key: "metrics.listen",
                    message: format!(
                        "{a:?} is not an address:port such as 127.0.0.1:9477 or [::1]:9477"
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// `toml`'s message with its line, without the source excerpt (which could
/// reveal the contents of whatever file was passed).
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {msg}")
        }
        None => msg,
    }
}

trait LevelFromStr {
    fn from_str_opt(s: &str) -> Option<log::LevelFilter>;
}

impl LevelFromStr for log::LevelFilter {
    fn from_str_opt(s: &str) -> Option<log::LevelFilter> {
        s.parse().ok().filter(|_| {
            matches!(
                s.to_ascii_lowercase().as_str(),
                "error" | "warn" | "info" | "debug" | "trace" | "off"
            )
        })
    }
}

/// The log level as a filter (validated by [`Config::validate`]).
pub fn level_filter(s: &str) -> log::LevelFilter {
    log::LevelFilter::from_str_opt(s).unwrap_or(log::LevelFilter::Info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_toml() {
        let cfg = Config::default();
        let text = cfg.to_toml();
        let back = Config::parse(&text, Path::new("mem.toml")).unwrap();
        assert_eq!(cfg, back);
    }

    #[test]
    fn unknown_key_names_file_key_and_line() {
        let err = Config::parse(
            "[daemon]\ninterval = \"5s\"\nintervall = \"5s\"\n",
            Path::new("/etc/x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/etc/x.toml"), "{err}");
        assert!(err.contains("intervall"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn probe_families_by_name_unknown_ones_refused() {
        let c = Config::parse(
            "[probes]\nreads = true\nfadvise = false\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(c.probes.is_on("reads"));
        assert!(!c.probes.is_on("fadvise"));
        assert!(
            c.probes.is_on("pagecache"),
            "unnamed families keep their default"
        );
        let err = Config::parse(
            "[probes]\nfadvise = true\npagecach = true\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pagecach") && err.contains("line 3"), "{err}");
        assert!(
            err.contains("pagecache, reclaim"),
            "lists the families: {err}"
        );
    }

    #[test]
    fn targets_are_one_matcher_each_at_most_eight() {
        let c = Config::parse(
            "[targets]\nbanyand = { comm = \"banyand\" }\ndb = { cgroup = \"system.slice/banyandb.service\" }\none = { pid = 42 }\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.targets.0.len(), 3);
        assert_eq!(c.targets.0["one"].pid, Some(42));
        for bad in [
            "[targets]\nx = { comm = \"a\", pid = 1 }\n",
            "[targets]\nx = { }\n",
            "[targets]\nx = { comm = \"0123456789abcdefg\" }\n",
            "[targets]\n\"a b\" = { pid = 1 }\n",
            "[targets]\nx = { cgroup = \"../etc\" }\n",
            "[targets]\nx = { process = \"a\" }\n",
        ] {
            let err = Config::parse(bad, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("targets") || err.contains("unknown field"),
                "{bad}: {err}"
            );
        }
        let many: String = (0..9)
            .map(|i| format!("t{i} = {{ pid = {i} }}\n"))
            .collect();
        let err = Config::parse(&format!("[targets]\n{many}"), Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 8"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Config::parse("[daemon]\ninterval = \"1ms\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("daemon.interval"), "{err}");
        let err = Config::parse("[metrics]\nlisten = [\"nowhere\"]\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics.listen"), "{err}");
    }

    #[test]
    fn parse_error_does_not_echo_contents() {
        let secret = "root:x:0:0:SECRET-LINE:/root:/bin/bash\n";
        let err = Config::parse(secret, Path::new("/etc/passwd"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("SECRET-LINE"), "{err}");
        assert!(err.contains("/etc/passwd"), "{err}");
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    /// The packaged file documents the defaults: it parses and equals them.
    #[test]
    fn packaged_config_is_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/iomond.toml"
        ));
        let cfg = Config::load(path).unwrap();
        assert_eq!(cfg, Config::default());
    }

    /// Its commented `[export.banyandb]` block, uncommented, is the
    /// exporter's defaults, every key of them.
    #[test]
    fn packaged_export_block_documents_every_key_with_its_default() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/iomond.toml"
        ))
        .unwrap();
        let block = text
            .split_once("#[export.banyandb]")
            .expect("the export block")
            .1;
        let mut uncommented = String::from("[export.banyandb]\n");
        let mut keys = Vec::new();
        for l in block.lines() {
            // "#key = value" is a default; "# key = value" an example.
            let Some(rest) = l.strip_prefix('#') else {
                continue;
            };
            let example = rest.strip_prefix(' ').unwrap_or("");
            let key = |s: &str| s.split_once(" = ").map(|(k, _)| k.trim().to_string());
            if !rest.starts_with(' ') {
                keys.extend(key(rest));
                uncommented.push_str(rest);
                uncommented.push('\n');
            } else if let Some(k) = key(example).filter(|k| !k.contains(' ')) {
                keys.push(k);
            }
        }
        let cfg = Config::parse(&uncommented, Path::new("block")).unwrap();
        let ours = crate::export::config::BanyanDbExport::default();
        assert_eq!(cfg.export.banyandb.as_ref(), Some(&ours));
        let all = toml::to_string(&crate::export::config::BanyanDbExport {
            tls_ca_file: Some("x".into()),
            tls_server_name: Some("x".into()),
            username: Some("x".into()),
            password_file: Some("x".into()),
            host: Some("x".into()),
            ..ours
        })
        .unwrap();
        for k in all
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, _)| k)
        {
            assert!(keys.iter().any(|d| d == k), "{k} is not documented");
        }
    }
}
