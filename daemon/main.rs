//! iomond: the daemon's command line. Everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::builder::{PossibleValue, TypedValueParser};
use clap::Parser;

use iomon::config::{self, Config, LogTarget};
use iomon::event_loop::{Daemon, Overrides, StartError, Startup};
use iomon::family;
use iomon::probes::{FamilyState, LoadOptions, Probes};

/// eBPF I/O monitor for BanyanDB hosts: what the page cache and the disks
/// under it do, counted in the kernel by probe families (see --enable) and
/// drained every interval.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, after_help = "\
Examples:
  iomond --dev                      run from a checkout: state in ./iomond-dev/, a line per tick
  iomond --check                    load and attach every probe family, print what attached, exit
  iomond --check-config --config /etc/iomond/iomond.toml
  iomond --config /etc/iomond/iomond.toml     (what the systemd unit runs)")]
struct Args {
    /// Config file [default: /etc/iomond/iomond.toml if it exists; built-in defaults otherwise]
    #[arg(long, short = 'c', value_name = "PATH")]
    config: Option<PathBuf>,

    /// Development mode: state and socket under ./iomond-dev/ (or --state-dir), store on,
    /// logs to stderr, one line per tick.
    #[arg(long)]
    dev: bool,

    /// Stay in the foreground and log to stderr (the default outside systemd too).
    #[arg(long)]
    foreground: bool,

    /// Directory for the history store (and, in --dev, the socket).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Control socket path.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Drain interval, e.g. 1s, 500ms, 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    interval: Option<std::time::Duration>,

    /// Serve Prometheus metrics on ADDR:PORT (repeatable; IPv6 as [::1]:9477).
    #[arg(long = "metrics-listen", value_name = "ADDR")]
    metrics_listen: Vec<String>,

    /// Switch a probe family on (repeatable).
    #[arg(long, value_name = "FAMILY", value_parser = FamilyParser)]
    enable: Vec<&'static str>,

    /// Switch a probe family off (repeatable).
    #[arg(long, value_name = "FAMILY", value_parser = FamilyParser)]
    disable: Vec<&'static str>,

    /// Where logs go: stderr, syslog, or auto (journal-aware stderr).
    #[arg(long, value_name = "TARGET", value_parser = ["auto", "stderr", "syslog"])]
    log: Option<String>,

    /// Log level: error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,

    /// Load and attach every enabled probe family, print a table, exit
    /// (non-zero only if nothing attached).
    #[arg(long)]
    check: bool,

    /// Validate the config file and exit.
    #[arg(long)]
    check_config: bool,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s)
}

/// A probe family's name, checked against the declared families, which
/// `--help` lists as the possible values (never a list written by hand).
#[derive(Clone, Debug)]
struct FamilyParser;

impl TypedValueParser for FamilyParser {
    type Value = &'static str;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<&'static str, clap::Error> {
        let s = value.to_string_lossy();
        family::by_name(&s).map(|f| f.name()).ok_or_else(|| {
            let flag = arg.map_or_else(|| "FAMILY".to_string(), |a| a.to_string());
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "unknown probe family {s:?} for {flag}; known: {}\n",
                    family::names().join(", ")
                ),
            )
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            family::names().into_iter().map(PossibleValue::new),
        ))
    }
}

fn load_config(args: &Args) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let path = match &args.config {
        Some(p) => Some(p.clone()),
        None if !args.dev && std::path::Path::new(config::DEFAULT_PATH).exists() => {
            Some(PathBuf::from(config::DEFAULT_PATH))
        }
        None => None,
    };
    let mut cfg = match &path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    overrides(args).apply(&mut cfg);
    cfg.validate()
        .with_context(|| "the command line gives an invalid value".to_string())?;
    Ok((cfg, path))
}

fn overrides(args: &Args) -> Overrides {
    let mut o = Overrides {
        interval: args.interval,
        state_dir: args.state_dir.clone(),
        socket: args.socket.clone(),
        socket_group: None,
        metrics_listen: args.metrics_listen.clone(),
        log_level: args.log_level.clone(),
        enable: args.enable.clone(),
        disable: args.disable.clone(),
    };
    if args.dev {
        let dir = args
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("iomond-dev"));
        o.socket = Some(
            args.socket
                .clone()
                .unwrap_or_else(|| dir.join("iomond.sock")),
        );
        o.state_dir = Some(dir);
        // Without a config file, the developer's own group owns the socket.
        if args.config.is_none() {
            o.socket_group = Some(String::new());
        }
        if args.interval.is_none() {
            o.interval = Some(std::time::Duration::from_secs(1));
        }
    }
    o
}

/// Tries every family, switched on in the config or not, and says which
/// route each takes on this kernel, or why none.
fn check(cfg: &Config) -> anyhow::Result<ExitCode> {
    let wanted = cfg.probes.enabled();
    let probes = Probes::load(&LoadOptions {
        enabled: family::names(),
        proc_capacity: cfg.daemon.proc_capacity,
        ..Default::default()
    })
    .context("failed to load the BPF programs")?;
    println!(
        "kernel {}, page size {} KiB, HZ {}",
        probes.kernel_release,
        (1u64 << probes.page_shift) / 1024,
        probes
            .hz
            .map(|(hz, from)| format!("{hz} (from {from})"))
            .unwrap_or_else(|| "unknown: writeback dirty age is not measured".into())
    );
    println!(
        "{:<10} {:<12} {:<13} {:<52} reason",
        "family", "state", "route", "event"
    );
    for s in probes.status() {
        let (state, reason) = match &s.state {
            FamilyState::Attached if !wanted.contains(&s.family.as_str()) => (
                "attached",
                "works, but switched off in the config".to_string(),
            ),
            FamilyState::Attached => ("attached", String::new()),
            FamilyState::Disabled => ("disabled", "switched off in the config".to_string()),
            FamilyState::Unavailable(why) => ("unavailable", why.clone()),
            FamilyState::Failed(why) => ("FAILED", why.clone()),
        };
        let route = s.route.clone().unwrap_or_else(|| "-".into());
        for (i, p) in s.programs.iter().enumerate() {
            let first = i == 0;
            let why = p.reason.clone().or_else(|| p.waiting()).unwrap_or_else(|| {
                if first {
                    reason.clone()
                } else {
                    String::new()
                }
            });
            println!(
                "{:<10} {:<12} {:<13} {:<52} {why}",
                if first { s.family.as_str() } else { "" },
                if first { state } else { "" },
                if first { route.as_str() } else { "" },
                p.event
            );
        }
        for sk in &s.skipped {
            println!(
                "{:<10} {:<12} {:<13} not route {}: {}",
                "", "", "", sk.route, sk.why
            );
        }
    }
    if !probes.any_attached() {
        eprintln!("iomond: no probe family could be attached");
        Ok(ExitCode::FAILURE)
    } else if !wanted.iter().any(|n| probes.attached(n)) {
        eprintln!("iomond: none of the families switched on in the config could be attached");
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Exit status for a bad config or nothing to monitor (EX_CONFIG): the
/// systemd unit does not restart on it (RestartPreventExitStatus=78).
const EXIT_CONFIG: u8 = 78;

/// An error that restarting will not fix.
#[derive(Debug)]
struct Permanent(anyhow::Error);

impl std::fmt::Display for Permanent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Permanent {}

/// Raises the open-file soft limit to the hard limit (at most 65536): the
/// HTTP and control connection caps add up to more than the usual 1024.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65536);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    raise_fd_limit();
    let (cfg, config_path) = load_config(&args).map_err(|e| anyhow::Error::new(Permanent(e)))?;
    if args.check_config {
        match &config_path {
            Some(p) => println!("{}: ok", p.display()),
            None => println!("no config file: built-in defaults are valid"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let target = match args.log.as_deref() {
        Some("stderr") => LogTarget::Stderr,
        Some("syslog") => LogTarget::Syslog,
        Some(_) => LogTarget::Auto,
        None if args.dev || args.foreground || args.check => LogTarget::Stderr,
        None => cfg.daemon.log,
    };
    iomon::logging::init(target, config::level_filter(&cfg.daemon.log_level))
        .map_err(anyhow::Error::msg)
        .context("failed to set up logging")?;
    iomon::logging::route_libbpf();
    if args.check {
        return check(&cfg);
    }
    if args.dev {
        std::fs::create_dir_all(&cfg.daemon.state_dir).with_context(|| {
            format!(
                "failed to create the state directory {}",
                cfg.daemon.state_dir.display()
            )
        })?;
        log::info!(
            "development mode: state in {}, socket {}; try `iomonctl --socket {} snapshot`",
            cfg.daemon.state_dir.display(),
            cfg.daemon.socket.display(),
            cfg.daemon.socket.display()
        );
    }
    let startup = Startup {
        config_path,
        overrides: overrides(&args),
        tick_lines: args.dev,
        systemd: std::env::var_os("NOTIFY_SOCKET").is_some(),
    };
    let mut daemon = match Daemon::start(cfg, startup) {
        Ok(d) => d,
        Err(StartError::NothingAttached(why)) => {
            return Err(anyhow::Error::new(Permanent(anyhow::anyhow!(
                "no probe family could be attached, nothing to monitor:\n{why}\n\
                 run `iomond --check` for the details; iomond needs root or CAP_BPF + CAP_PERFMON (+ CAP_DAC_READ_SEARCH for tracefs)"
            ))))
        }
        Err(e @ StartError::Probe(_)) => {
            // BPF refused outright: a restart will not change that.
            return Err(anyhow::Error::new(Permanent(anyhow::Error::new(e).context("failed to start"))));
        }
        Err(e) => return Err(e).context("failed to start"),
    };
    daemon.run().context("the event loop failed")?;
    log::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            // The whole chain on one line (stderr is the journal under
            // systemd).
            eprintln!("iomond: {e:#}");
            if e.downcast_ref::<Permanent>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_lists_every_declared_family() {
        let help = Args::command().render_help().to_string();
        for flag in ["--enable", "--disable"] {
            let at = help.find(flag).expect("flag in help");
            let text = &help[at..];
            let end = text.find("\n  -").unwrap_or(text.len());
            for name in family::names() {
                assert!(
                    text[..end].contains(name),
                    "{flag} help lacks {name}:\n{help}"
                );
            }
        }
    }

    #[test]
    fn family_names_parse_and_unknown_ones_say_which_exist() {
        let args = Args::try_parse_from(["iomond", "--enable", "block", "--disable", "reads"])
            .expect("declared families parse");
        assert_eq!(args.enable, ["block"]);
        assert_eq!(args.disable, ["reads"]);
        let err = Args::try_parse_from(["iomond", "--enable", "disk"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown probe family \"disk\""), "{msg}");
        assert!(msg.contains(&family::names().join(", ")), "{msg}");
    }
}
