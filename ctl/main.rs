//! iomonctl: asks a running iomond over its control socket. Parses
//! arguments and renders; the wire is `iomon::proto`.

mod render;
mod timespec;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use iomon::drain::Strategy;
use iomon::family::{self, Scope, Series};
use iomon::proto::{Client, ClientError, ErrorKind, Request, Response};
use iomon::sample::{top_over, FilesBy, TopBy};
use iomon::store::{StoreCopy, StoreError};
use render::Output;

const DEFAULT_SOCKET: &str = "/run/iomond/iomond.sock";

/// Ask iomond what the page cache and the disk I/O under it are doing.
///
/// Exit codes: 0 ok, 1 the daemon refused or failed, 2 usage error,
/// 3 cannot reach the daemon.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "\
Examples:
  iomonctl status                          is it running, what is attached
  iomonctl snapshot                        rates over the last interval and totals
  iomonctl top --by misses -n 5            who misses the page cache most
  iomonctl files --since 1h --target banyand --by dontneed
  iomonctl banyandb --since 1h             is the page cache working for BanyanDB?
  iomonctl history --since 1h --metric hit-ratio
  iomonctl history -s yesterday -e today --step 1h -o csv
  iomonctl strategy set accumulate         (root or the admin group)
  iomonctl interval set 5s
Times: 90s, 15m, 1h30m, \"2d ago\", now, today, yesterday,
       2026-11-25T10:00:00Z, @1764064800 (epoch seconds)."
)]
struct Args {
    /// Control socket of the daemon (in development: iomond-dev/iomond.sock).
    #[arg(long, global = true, value_name = "PATH", env = "IOMON_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,

    /// Output format: table for people, json or csv for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,

    /// Give up on the daemon after this long.
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

/// The live view's options.
#[derive(clap::Args, Debug, Clone, Copy)]
struct Watch {
    /// Redraw every INTERVAL (default 2s) until q or Ctrl-C: a live view
    /// on a terminal (< > change the sort, space redraws), the plain
    /// output repeated when stdout is not a terminal.
    #[arg(long, short = 'w', value_name = "INTERVAL", num_args = 0..=1,
          default_missing_value = "2s", value_parser = parse_watch)]
    watch: Option<Duration>,
    /// With --watch: stop after this many screens.
    #[arg(long, value_name = "N", requires = "watch")]
    iterations: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Version, uptime, interval, strategy, probe families, store, warnings.
    Status,
    /// Rates over the last interval and totals since the daemon started.
    Snapshot {
        /// A target's numbers (see `status`) instead of the host's.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        #[command(flatten)]
        watch: Watch,
    },
    /// The busiest processes over the last interval or a --since window.
    Top {
        /// Rank by: activity, or a per-process field of a probe family
        /// (the families declare them).
        #[arg(long, default_value = "activity",
              value_parser = clap::builder::PossibleValuesParser::new(family::ranks()))]
        by: String,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 10)]
        n: u32,
        /// Over a window from the history store instead of the last interval.
        #[arg(long, short = 's', value_name = "TIME")]
        since: Option<String>,
        /// Only a target's processes.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Read a stopped iomond's history store (its file, or the
        /// directory holding history.redb) instead of asking the daemon;
        /// --since defaults to 1h.
        #[arg(long, value_name = "PATH", conflicts_with = "watch")]
        store: Option<PathBuf>,
        #[command(flatten)]
        watch: Watch,
    },
    /// The time series from the history store.
    History {
        /// Start of the range.
        #[arg(long, short = 's', value_name = "TIME", default_value = "1h")]
        since: String,
        /// End of the range [default: now].
        #[arg(long, short = 'e', value_name = "TIME")]
        until: Option<String>,
        /// Width of each point, e.g. 10s, 1m, 1h (at the daemon's interval
        /// itself, one point per Sample) [default: about 60 points].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        step: Option<Duration>,
        /// What the table charts (json/csv give every metric): any series
        /// of the probe families, e.g. hit-ratio, dontneed-calls,
        /// mmap-hit-ratio, dirtied-pages.
        #[arg(long, default_value = "hit-ratio", value_parser = parse_metric)]
        metric: Series,
        /// A target's numbers instead of the host's.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// One block device's numbers (its name in /sys/block, e.g.
        /// nvme0n1) instead of the whole host's; block metrics only.
        #[arg(long, value_name = "NAME", conflicts_with = "target")]
        device: Option<String>,
        /// Counts per step instead of per-second rates (ratios are
        /// ratios either way).
        #[arg(long)]
        counts: bool,
        /// Read a stopped iomond's history store (its file, or the
        /// directory holding history.redb, e.g. /var/lib/iomond/history)
        /// instead of asking the daemon. It is never changed: a copy is
        /// read. Refused while a running iomond holds it.
        #[arg(long, value_name = "PATH")]
        store: Option<PathBuf>,
    },
    /// The targets' files over a window from the history store: which
    /// ones their reads missed on, which were evicted, which they advised
    /// away (POSIX_FADV_DONTNEED) and what that dropped.
    Files {
        /// Start of the window.
        #[arg(long, short = 's', value_name = "TIME", default_value = "1h")]
        since: String,
        /// Rank by pages: misses (reads' and faults'), evicted, dontneed
        /// (advised away) or refaults (read back soon after eviction).
        #[arg(long, default_value = "misses", value_parser = parse_files_by)]
        by: FilesBy,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        n: u32,
        /// Only a target's files.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
    /// Is the page cache working for BanyanDB? Over a window of the
    /// history: per engine and group, the hit ratios of index and data
    /// files (reads and faults apart), what DONTNEED dropped and how much
    /// of it was read back, index pages evicted by reclaim, the memory
    /// cgroup's file cache and refaults, the DONTNEED threshold; then the
    /// files with the most misses and refaults; the answer in words.
    Banyandb {
        /// Start of the window.
        #[arg(long, short = 's', value_name = "TIME", default_value = "1h")]
        since: String,
        /// How many files in each top list.
        #[arg(short = 'n', long, default_value_t = 10)]
        n: u32,
        /// Only a target's files.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Read a stopped iomond's history store instead of asking the
        /// daemon (the naming and the refault window are then unknown).
        #[arg(long, value_name = "PATH", conflicts_with = "watch")]
        store: Option<PathBuf>,
        #[command(flatten)]
        watch: Watch,
    },
    /// Each probe family and program: attached or not and why, run stats.
    Probes,
    /// Get or set how per-process tables are kept.
    Strategy {
        #[command(subcommand)]
        op: StrategyOp,
    },
    /// Get or set the drain interval.
    Interval {
        #[command(subcommand)]
        op: IntervalOp,
    },
    /// Make the daemon re-read its config file.
    Reload,
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
enum StrategyOp {
    Get,
    /// drain: per-process map emptied every tick; accumulate: kept, LRU-bounded.
    Set {
        #[arg(value_parser = ["drain", "accumulate"])]
        strategy: String,
    },
}

#[derive(Subcommand, Debug)]
enum IntervalOp {
    Get,
    /// e.g. 10s, 1s, 500ms (100ms..1h); takes effect after the next tick.
    Set {
        #[arg(value_parser = parse_duration)]
        interval: Duration,
    },
}

fn parse_metric(s: &str) -> Result<Series, String> {
    render::find_series(s).ok_or_else(|| {
        let names: Vec<String> = render::all_series()
            .iter()
            .map(render::series_arg)
            .collect();
        format!("no such metric; one of: {}", names.join(", "))
    })
}

fn parse_files_by(s: &str) -> Result<FilesBy, String> {
    FilesBy::parse(s).ok_or_else(|| {
        let names: Vec<&str> = FilesBy::ALL.iter().map(|b| b.name()).collect();
        format!("one of: {}", names.join(", "))
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    iomon::units::parse_duration(s)
}

fn parse_watch(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < Duration::from_millis(100) => {
            Err("a live view redraws at most every 100ms".into())
        }
        d => Ok(d),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => {
            Err("a timeout of 0 would give up before asking: use at least 1ms".into())
        }
        d => Ok(d),
    }
}

/// A `--since`/`--until` time, which must not lie in the future.
fn parse_past(flag: &str, s: &str, now: u64) -> Result<u64, String> {
    let t = timespec::parse_time(s, now).map_err(|e| format!("{flag}: {e}"))?;
    if t > now + 1000 {
        return Err(format!(
            "{flag} {} is in the future (it is {} now)",
            timespec::format_local(t),
            timespec::format_local(now)
        ));
    }
    Ok(t)
}

/// The live view of `top` or `snapshot`: asks the daemon each interval
/// (reconnecting when it went away) and renders as the one-shot command.
fn live(
    args: &Args,
    every: Duration,
    iterations: Option<u64>,
    sorts: Vec<&'static str>,
    sort: usize,
    request: impl Fn(Option<&str>) -> Request,
) -> ExitCode {
    let mut client: Option<Client> = None;
    let out = args.output;
    let frame = move |by: Option<&str>| -> Result<String, String> {
        if client.is_none() {
            client = Some(
                Client::connect(&args.socket, args.timeout).map_err(|e| iomon::error_chain(&e))?,
            );
        }
        let c = client.as_mut().expect("connected above");
        let response = c.call(&request(by)).map_err(|e| {
            client = None;
            iomon::error_chain(&e)
        })?;
        match response {
            Response::Top(r) => Ok(render::top(&r, out)),
            Response::BanyanDb(r) => Ok(render::banyandb(&r, out)),
            Response::Snapshot(r) => match &args.command {
                Command::Snapshot {
                    target: Some(t), ..
                } => render::snapshot_of_target(&r, t)
                    .map(|r| render::snapshot(&r, out, Scope::Target)),
                _ => Ok(render::snapshot(&r, out, Scope::Host)),
            },
            Response::Error { message, .. } => Err(message),
            _ => Err("the daemon answered something else".into()),
        }
    };
    let view = watch::View {
        sorts,
        sort,
        interval: every,
        iterations,
        plain: out != Output::Table,
        separator: out != Output::Json,
        frame: Box::new(frame),
    };
    match watch::run(view) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_DAEMON, format!("live view: {e}")),
    }
}

/// Answers `history` or `top` from a stopped daemon's store (a copy of
/// it), as the daemon would.
fn from_store(path: &std::path::Path, request: &Request, now: u64) -> Result<Response, String> {
    let copy = StoreCopy::open(path).map_err(|e| match e {
        StoreError::Locked(_) => format!(
            "{}: a running iomond holds it; ask the daemon instead (drop --store)",
            iomon::error_chain(&e)
        ),
        e => iomon::error_chain(&e),
    })?;
    match request {
        Request::History {
            since_ms,
            until_ms,
            step_ms,
        } => copy
            .store
            .range(*since_ms, until_ms.unwrap_or(now), *step_ms)
            .map(Response::History)
            .map_err(|e| iomon::error_chain(&e)),
        Request::Top {
            by,
            n,
            since_ms,
            target,
        } => {
            let since = since_ms.unwrap_or(now.saturating_sub(3_600_000));
            let key = TopBy::parse(by).ok_or_else(|| format!("unknown ranking {by:?}"))?;
            let h = copy
                .store
                .range(since, now, Some(now.saturating_sub(since).max(1)))
                .map_err(|e| iomon::error_chain(&e))?;
            if h.points.is_empty() {
                return Err(format!(
                    "no history in this window in {}{}",
                    path.display(),
                    h.oldest_ms
                        .map(|o| format!(" (it starts at {})", timespec::format_local(o)))
                        .unwrap_or_else(|| " (it is empty)".into())
                ));
            }
            let (procs, families) = top_over(
                &h.points,
                key,
                (*n as usize).clamp(1, 1000),
                target.as_deref(),
            );
            Ok(Response::Top(iomon::proto::TopReport {
                start_ms: since,
                end_ms: now,
                by: by.clone(),
                procs,
                families,
            }))
        }
        Request::BanyanDb {
            since_ms,
            n,
            target,
        } => {
            let h = copy
                .store
                .range(*since_ms, now, None)
                .map_err(|e| iomon::error_chain(&e))?;
            let mut r =
                iomon::report::build(&h.points, *since_ms, now, target.as_deref(), *n as usize);
            r.answer = r.words();
            Ok(Response::BanyanDb(Box::new(r)))
        }
        _ => Err("--store answers history, top and banyandb only".into()),
    }
}

/// Exit codes scripts can rely on.
const EXIT_DAEMON: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("iomonctl: {msg}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let now = iomon::now_ms();
    match &args.command {
        Command::Top {
            watch:
                Watch {
                    watch: Some(every),
                    iterations,
                },
            since,
            by,
            n,
            target,
            ..
        } => {
            if since.is_some() {
                return fail(
                    EXIT_USAGE,
                    "--watch shows each last interval live; drop --since (or drop --watch for a window)",
                );
            }
            let sorts = family::ranks();
            let sort = sorts.iter().position(|r| r == by).unwrap_or(0);
            let (n, target) = (*n, target.clone());
            return live(&args, *every, *iterations, sorts, sort, move |by| {
                Request::Top {
                    by: by.unwrap_or("activity").to_string(),
                    n,
                    since_ms: None,
                    target: target.clone(),
                }
            });
        }
        Command::Snapshot {
            watch:
                Watch {
                    watch: Some(every),
                    iterations,
                },
            ..
        } => {
            return live(&args, *every, *iterations, Vec::new(), 0, |_| {
                Request::Snapshot
            })
        }
        Command::Banyandb {
            watch:
                Watch {
                    watch: Some(every),
                    iterations,
                },
            since,
            n,
            target,
            ..
        } => {
            // The window slides: --since is taken back from each screen's
            // now.
            let back = match parse_past("--since", since, now) {
                Ok(t) => now.saturating_sub(t),
                Err(e) => return fail(EXIT_USAGE, e),
            };
            let (n, target) = (*n, target.clone());
            return live(&args, *every, *iterations, Vec::new(), 0, move |_| {
                Request::BanyanDb {
                    since_ms: iomon::now_ms().saturating_sub(back),
                    n,
                    target: target.clone(),
                }
            });
        }
        _ => {}
    }
    let request = match &args.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Args::command(),
                "iomonctl",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Status => Request::Status,
        Command::Snapshot { .. } => Request::Snapshot,
        Command::Probes => Request::Probes,
        Command::Top {
            by,
            n,
            since,
            target,
            ..
        } => {
            let since_ms = match since
                .as_deref()
                .map(|s| parse_past("--since", s, now))
                .transpose()
            {
                Ok(v) => v,
                Err(e) => return fail(EXIT_USAGE, e),
            };
            Request::Top {
                by: by.clone(),
                n: *n,
                since_ms,
                target: target.clone(),
            }
        }
        Command::History {
            since,
            until,
            step,
            metric,
            target,
            device,
            ..
        } => {
            if device.is_some() && !render::has_rows(metric, render::DEVICE) {
                return fail(
                    EXIT_USAGE,
                    format!(
                        "--metric {} has no per-device numbers (families counted per device: {}); drop --device",
                        render::series_arg(metric),
                        render::families_with_rows(render::DEVICE)
                    ),
                );
            }
            if target.is_some() && metric.host_only {
                return fail(
                    EXIT_USAGE,
                    format!(
                        "--metric {} is counted for the host only (its events run in no task of a target's); drop --target",
                        render::series_arg(metric)
                    ),
                );
            }
            let since_ms = match parse_past("--since", since, now) {
                Ok(v) => v,
                Err(e) => return fail(EXIT_USAGE, e),
            };
            let until_ms = match until
                .as_deref()
                .map(|s| timespec::parse_time(s, now))
                .transpose()
            {
                Ok(v) => v,
                Err(e) => return fail(EXIT_USAGE, format!("--until: {e}")),
            };
            if let Some(u) = until_ms {
                if u < since_ms {
                    return fail(
                        EXIT_USAGE,
                        format!(
                            "--until {} is before --since {}",
                            timespec::format_local(u),
                            timespec::format_local(since_ms)
                        ),
                    );
                }
            }
            let span = until_ms.unwrap_or(now).saturating_sub(since_ms);
            Request::History {
                since_ms,
                until_ms,
                step_ms: Some(
                    step.map(|d| d.as_millis() as u64)
                        .unwrap_or((span / 60).max(1000)),
                ),
            }
        }
        Command::Files {
            since,
            by,
            n,
            target,
        } => match parse_past("--since", since, now) {
            Ok(since_ms) => Request::Files {
                by: *by,
                n: *n,
                since_ms,
                target: target.clone(),
            },
            Err(e) => return fail(EXIT_USAGE, e),
        },
        Command::Banyandb {
            since, n, target, ..
        } => match parse_past("--since", since, now) {
            Ok(since_ms) => Request::BanyanDb {
                since_ms,
                n: *n,
                target: target.clone(),
            },
            Err(e) => return fail(EXIT_USAGE, e),
        },
        Command::Strategy {
            op: StrategyOp::Get,
        } => Request::GetStrategy,
        Command::Strategy {
            op: StrategyOp::Set { strategy },
        } => match Strategy::parse(strategy) {
            Some(s) => Request::SetStrategy(s),
            None => return fail(EXIT_USAGE, format!("unknown strategy {strategy:?}")),
        },
        Command::Interval {
            op: IntervalOp::Get,
        } => Request::GetInterval,
        Command::Interval {
            op: IntervalOp::Set { interval },
        } => Request::SetInterval {
            ms: interval.as_millis() as u64,
        },
        Command::Reload => Request::Reload,
    };

    let store = match &args.command {
        Command::History { store, .. }
        | Command::Top { store, .. }
        | Command::Banyandb { store, .. } => store.as_deref(),
        _ => None,
    };
    let response = match store {
        Some(path) => match from_store(path, &request, now) {
            Ok(r) => r,
            Err(e) => return fail(EXIT_DAEMON, e),
        },
        None => {
            let mut client = match Client::connect(&args.socket, args.timeout) {
                Ok(c) => c,
                Err(e @ (ClientError::Connect { .. } | ClientError::Frame(_))) => {
                    return fail(EXIT_UNREACHABLE, iomon::error_chain(&e))
                }
                Err(e) => return fail(EXIT_DAEMON, iomon::error_chain(&e)),
            };
            match client.call(&request) {
                Ok(r) => r,
                Err(e) => return fail(EXIT_UNREACHABLE, iomon::error_chain(&e)),
            }
        }
    };
    let out = args.output;
    let text = match response {
        Response::Status(r) => render::status(&r, out),
        Response::Snapshot(r) => match &args.command {
            Command::Snapshot {
                target: Some(t), ..
            } => match render::snapshot_of_target(&r, t) {
                Ok(r) => render::snapshot(&r, out, Scope::Target),
                Err(e) => return fail(EXIT_DAEMON, e),
            },
            _ => render::snapshot(&r, out, Scope::Host),
        },
        Response::Top(r) => render::top(&r, out),
        Response::Files(r) => render::files(&r, out),
        Response::BanyanDb(r) => render::banyandb(&r, out),
        Response::History(r) => {
            let (metric, target, device, counts) = match &args.command {
                Command::History {
                    metric,
                    target,
                    device,
                    counts,
                    ..
                } => (*metric, target.clone(), device.clone(), *counts),
                _ => (
                    render::find_series("hit-ratio").expect("hit-ratio is a series"),
                    None,
                    None,
                    false,
                ),
            };
            let (r, scope) = match (target, device) {
                (Some(t), _) => match render::history_of_target(&r, &t) {
                    Ok(r) => (r, Scope::Target),
                    Err(e) => return fail(EXIT_DAEMON, e),
                },
                (None, Some(d)) => match render::history_of_row(&r, render::DEVICE, &d) {
                    Ok(r) => (r, Scope::Host),
                    Err(e) => return fail(EXIT_DAEMON, e),
                },
                (None, None) => (r, Scope::Host),
            };
            let per = if counts {
                render::Per::Step
            } else {
                render::Per::Second
            };
            render::history(&r, &metric, out, scope, per)
        }
        Response::Probes(f) => render::probes(&f, out, iomon::probes::bpf_stats_enabled().ok()),
        Response::Strategy { current, previous } => render::strategy(current, previous, out),
        Response::Interval {
            current_ms,
            previous_ms,
        } => render::interval(current_ms, previous_ms, out),
        Response::Reloaded { changes } => render::reloaded(&changes, out),
        Response::Error { kind, message } => {
            let hint = match kind {
                ErrorKind::Denied => {
                    " (run as root, or join the admin group named by daemon.admin_group)"
                }
                _ => "",
            };
            return fail(EXIT_DAEMON, format!("{message}{hint}"));
        }
        Response::Hello { .. } => return fail(EXIT_DAEMON, "unexpected hello from the daemon"),
    };
    print!("{text}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn top_ranks_by_every_declared_rank_and_lists_them() {
        let mut cmd = Args::command();
        let help = cmd
            .find_subcommand_mut("top")
            .expect("top")
            .render_help()
            .to_string();
        for rank in family::ranks() {
            assert!(help.contains(rank), "top --help lacks {rank}:\n{help}");
            Args::try_parse_from(["iomonctl", "top", "--by", rank])
                .unwrap_or_else(|e| panic!("--by {rank}: {e}"));
        }
        let err = Args::try_parse_from(["iomonctl", "top", "--by", "disk"]).unwrap_err();
        assert!(err.to_string().contains("disk-read"), "{err}");
    }
}
